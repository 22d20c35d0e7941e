"""Build melt's benchmark host app for iPhones (``frameworks/llama.cpp/ios/``).

Needs macOS, Xcode (``xcodebuild``), CMake and an Apple development team to
sign with. Anywhere else :func:`build_ios_app` raises :class:`BuildError`
naming what is missing, before running anything.
"""

from __future__ import annotations

import platform
import shutil
import subprocess
from pathlib import Path

from melt.errors import BuildError
from melt.frameworks.llamacpp.recipe import recipe_dir


def missing_toolchain() -> list[str]:
    """What this machine lacks to build the app (empty: nothing)."""
    problems = []
    if platform.system() != "Darwin":
        problems.append(f"macOS with Xcode (this machine runs {platform.system()})")
    elif shutil.which("xcodebuild") is None:
        problems.append("Xcode's xcodebuild (xcode-select --install, then install Xcode)")
    if shutil.which("cmake") is None:
        problems.append("cmake")
    return problems


def build_ios_app(llama_dir: Path, team_id: str, *, out: Path | None = None,
                  bundle_id: str = "org.melt.bench") -> Path:
    """Configure and build the app; returns the signed ``MeltBench.app`` folder.

    Raises :class:`BuildError` for a missing toolchain, a llama.cpp tree
    without llama-bench or llama-completion, an empty team id, or a failed build (with its last line).
    """
    problems = missing_toolchain()
    if problems:
        raise BuildError("the iPhone benchmark app needs " + ", ".join(problems))
    llama_dir = Path(llama_dir)
    for tool in ("llama-bench/llama-bench.cpp", "completion/completion.cpp"):
        if not (llama_dir / "tools" / tool).is_file():
            raise BuildError(f"not a llama.cpp source tree (no tools/{tool}): {llama_dir}")
    if not team_id.strip():
        raise BuildError("an Apple development team id is needed to sign the app")
    src = recipe_dir() / "ios"
    build = Path(out or (llama_dir.parent / "ios-build"))
    steps = [
        ["cmake", "-G", "Xcode", "-S", str(src), "-B", str(build), "-DCMAKE_SYSTEM_NAME=iOS",
         f"-DLLAMA_DIR={llama_dir}", f"-DMELT_TEAM_ID={team_id}", f"-DMELT_BUNDLE_ID={bundle_id}"],
        ["xcodebuild", "-project", str(build / "MeltBench.xcodeproj"), "-scheme", "MeltBench",
         "-configuration", "Release", "-destination", "generic/platform=iOS", "-allowProvisioningUpdates",
         f"SYMROOT={build / 'products'}"],
    ]
    for argv in steps:
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["(no output)"]
            raise BuildError(f"{argv[0]} failed: {tail[0][:300]}")
    app = build / "products" / "Release-iphoneos" / "MeltBench.app"
    if not app.is_dir():
        raise BuildError(f"xcodebuild finished but {app} is missing")
    return app

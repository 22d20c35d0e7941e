"""Configure and build llama.cpp with CMake for one profile, cached.

A build lives in ``<cache>/builds/llama.cpp/<profile>-<key>/``::

    bin/llama-bench, bin/llama-completion   the binaries to push
    build.json                              provenance (commit, flags, compiler, ...)
    build.log                               everything cmake printed

``key`` hashes the source tree's identity, the patches, the profile, its
flags, toolchain and the targets it can build, so an unchanged request is a
cache hit that runs no compiler. CMake works in
``builds/llama.cpp/.work/<profile>-<key>/`` (kept after an interruption, so
the next attempt resumes); the finished folder appears by one atomic rename,
after ``build.json`` is written, so an interrupted build is never taken for a
finished one.

A build publishes the targets asked for (by default all but the recipe's
``on_demand`` ones, such as llama-server). A later request for a target it
lacks compiles just that target in the kept CMake folder and adds the binary
to the same build folder (each file and ``build.json`` replaced atomically;
binaries already there are never touched). The CMake folder is removed once
every target of the profile is published.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

from melt import __version__ as melt_version
from melt.devices.abi import host_abi
from melt.errors import BuildError
from melt.hashing import file_sha256
from melt.frameworks.base import Build, OutputCallback
from melt.frameworks.cache import cache_root, file_lock, publish_dir
from melt.frameworks.llamacpp.recipe import Profile, Recipe, load_recipe
from melt.frameworks.llamacpp.source import SourceTree, obtain_source, parse_source

BUILD_SCHEMA_VERSION = 1
# Bump when the way melt drives CMake changes, so old cache entries are not reused.
_BUILD_LOGIC = 1


def builds_root(cache: Path | None = None) -> Path:
    """``<cache>/builds/llama.cpp``."""
    return (cache or cache_root()) / "builds" / "llama.cpp"


def check_toolchain(profile: Profile) -> None:
    """Raise :class:`BuildError` naming the first missing tool a profile needs."""
    if shutil.which("cmake") is None:
        raise BuildError("cmake is not on PATH: apt-get install cmake (or pip install cmake)")
    for req in profile.requires:
        problem = req.problem()
        if problem:
            raise BuildError(f"cannot build profile '{profile.name}': {problem}")


def build_llamacpp(
    profile: str = "host",
    *,
    source: str | None = None,
    force: bool = False,
    on_output: OutputCallback | None = None,
    recipe: Recipe | None = None,
    cache: Path | None = None,
    jobs: int | None = None,
    targets: Sequence[str] | None = None,
) -> Build:
    """Build (or reuse) llama.cpp for ``profile`` and return the :class:`Build`.

    ``source`` is ``--source`` text (``None``: the recipe's pinned sdist).
    ``force`` rebuilds from scratch. ``on_output`` receives every line of
    progress and compiler output. ``jobs`` defaults to the CPU count.
    ``targets``: the binaries wanted (default: the profile's targets but the
    recipe's ``on_demand`` ones); the returned build holds at least these.
    Raises :class:`BuildError` for a missing toolchain, a failed download or
    patch, a target the profile does not build, or a failed CMake step (the
    message names the log file).
    """
    recipe = recipe or load_recipe()
    prof = recipe.profile(profile)
    say = on_output or (lambda line: None)
    wanted = sorted(set(recipe.default_targets(profile) if targets is None else targets))
    unknown = [t for t in wanted if t not in prof.targets]
    if unknown:
        raise BuildError(f"profile '{prof.name}' does not build {', '.join(unknown)}; "
                         f"it builds {', '.join(prof.targets)}")
    check_toolchain(prof)

    tree = obtain_source(parse_source(source, recipe), recipe, cache=cache, on_output=say)
    flags = _resolved_flags(recipe, prof, tree)
    toolchain_path = recipe.toolchain_path(prof.name)
    toolchain = str(toolchain_path) if toolchain_path else None
    key = build_key(tree, prof, flags, _toolchain_identity(recipe, toolchain_path))
    root = builds_root(cache)
    final = root / f"{prof.name}-{key}"
    work = root / ".work" / f"{prof.name}-{key}"

    with file_lock(root / ".locks" / f"{prof.name}-{key}.lock"):
        if force:
            shutil.rmtree(final, ignore_errors=True)
            shutil.rmtree(work, ignore_errors=True)
        cached = _load_finished(final, wanted)
        if cached is not None:
            say(f"cached build: {final}")
            return cached
        existing = _load_finished(final, [])
        if existing is None and final.exists():  # damaged: not a finished build
            shutil.rmtree(final, ignore_errors=True)
        todo = [t for t in wanted if existing is None or t not in existing.binaries]
        if existing is not None:
            say(f"cached build {final} lacks {', '.join(todo)}: building {'it' if len(todo) == 1 else 'them'}")
        return _run_build(recipe, prof, tree, flags, toolchain, key, final, work, say, jobs, todo, existing)


def host_build(on_output: OutputCallback | None = None, *, targets: Sequence[str] | None = None) -> Build:
    """The default host build (pinned source, ``host`` profile), built once and cached.

    ``targets`` as for :func:`build_llamacpp` (default: all but the on-demand ones).
    """
    return build_llamacpp("host", on_output=on_output, targets=targets)


def _toolchain_identity(recipe: Recipe, path: Path | None) -> str | None:
    """What a toolchain file contributes to the key: its content, and where it lives.

    A file of the recipe is named relative to it, so every checkout of melt
    shares one cache entry; any other file (an NDK's) by its absolute path.
    """
    if path is None:
        return None
    if not path.is_file():
        raise BuildError(f"toolchain file not found: {path}")
    try:
        where = str(path.resolve().relative_to(recipe.root.resolve()))
    except ValueError:
        where = str(path)
    return f"{where}@sha256:{file_sha256(path)}"


def build_key(tree: SourceTree, prof: Profile, flags: dict[str, str], toolchain: str | None) -> str:
    """12 hex digits identifying what a build produces.

    ``toolchain`` is the toolchain file's identity (see :func:`_toolchain_identity`).
    """
    blob = json.dumps(
        {
            "logic": _BUILD_LOGIC,
            "source": tree.identity,
            "profile": prof.name,
            "flags": flags,
            "toolchain": toolchain,
            "targets": sorted(prof.targets),
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _resolved_flags(recipe: Recipe, prof: Profile, tree: SourceTree) -> dict[str, str]:
    flags = {k: os.path.expandvars(v) for k, v in recipe.flags_for(prof.name).items()}
    # Without these, llama.cpp asks git, which finds no repository (or, when the
    # cache sits inside some checkout, the wrong one).
    flags.setdefault("LLAMA_BUILD_COMMIT", (tree.commit or f"{tree.kind}-{tree.sha256}")[:8])
    flags.setdefault("LLAMA_BUILD_NUMBER", "0")
    return dict(sorted(flags.items()))


def _load_finished(final: Path, expected: list[str]) -> Build | None:
    """The finished build in ``final`` if it holds every ``expected`` binary, else ``None``."""
    info_path = final / "build.json"
    if not info_path.is_file():
        return None
    try:
        info = json.loads(info_path.read_text())
        binaries = {name: final / b["file"] for name, b in info["binaries"].items()}
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not all(p.is_file() for p in binaries.values()) or not set(expected) <= set(binaries):
        return None
    return Build(dir=final, bin_dir=final / "bin", binaries=binaries, provenance=info, cached=True)


def _run_build(recipe, prof, tree, flags, toolchain, key, final, work, say, jobs, targets,
               existing: Build | None) -> Build:
    """Compile ``targets`` in ``work`` and publish them: a new build folder, or added to ``existing``."""
    cmake_dir = work / "cmake"
    cmake_dir.mkdir(parents=True, exist_ok=True)
    log_path = work / "build.log"
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    configure = ["cmake", "-S", str(tree.path), "-B", str(cmake_dir), *generator]
    configure += [f"-D{k}={v}" for k, v in flags.items()]
    if toolchain:
        configure.append(f"-DCMAKE_TOOLCHAIN_FILE={toolchain}")
    jobs = jobs or os.cpu_count() or 2
    compile_ = ["cmake", "--build", str(cmake_dir), "-j", str(jobs), "--target", *targets]
    started = time.monotonic()
    with open(log_path, "a", encoding="utf-8", buffering=1) as log:
        log.write(f"# melt build {prof.name}-{key} at {_now()}\n")
        _stream(configure, "configure", log, log_path, say)
        _stream(compile_, "build", log, log_path, say)
    seconds = round(time.monotonic() - started, 1)

    built = cmake_dir / "bin"
    binaries = list(targets)
    missing = [b for b in binaries if not (built / b).is_file()]
    if missing:
        raise BuildError(f"build finished without {', '.join(missing)}; see {log_path}")
    if existing is not None:
        return _add_to_build(existing, built, binaries, prof, work, log_path, seconds, say)

    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{prof.name}-{key}-", dir=final.parent))
    try:
        (tmp / "bin").mkdir()
        entries = {}
        for name in binaries:
            shutil.copy2(built / name, tmp / "bin" / name)
            entries[name] = {"file": f"bin/{name}", "sha256": file_sha256(tmp / "bin" / name)}
        for lib in built.glob("*.so*"):  # only present when a profile builds shared libs
            shutil.copy2(lib, tmp / "bin" / lib.name)
        shutil.copy2(log_path, tmp / "build.log")
        provenance = _provenance(prof, tree, flags, toolchain, key, cmake_dir, seconds, entries, jobs, binaries)
        # build.json is the completion mark: written last, inside the folder
        # that only becomes visible by the rename below.
        (tmp / "build.json").write_text(json.dumps(provenance, indent=2) + "\n")
        tmp.chmod(0o755)  # mkdtemp made it private
        publish_dir(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log_path.unlink(missing_ok=True)  # copied into the build; a later addition starts a fresh one
    _drop_work_when_complete(prof, entries, work)
    say(f"built {prof.name} in {seconds:.0f} s: {final}")
    return Build(
        dir=final,
        bin_dir=final / "bin",
        binaries={n: final / e["file"] for n, e in entries.items()},
        provenance=provenance,
        cached=False,
    )


def _add_to_build(existing: Build, built: Path, names: list[str], prof: Profile, work: Path,
                  log_path: Path, seconds: float, say) -> Build:
    """Add freshly built ``names`` to a published build, in place and atomically per file."""
    final = existing.dir
    provenance = dict(existing.provenance)
    entries = dict(provenance.get("binaries") or {})
    for name in names:
        tmp = final / "bin" / f".{name}.{os.getpid()}.tmp"
        shutil.copy2(built / name, tmp)
        os.replace(tmp, final / "bin" / name)
        entries[name] = {"file": f"bin/{name}", "sha256": file_sha256(final / "bin" / name)}
    provenance["binaries"] = dict(sorted(entries.items()))
    provenance["targets"] = [t for t in prof.targets if t in entries]
    provenance["added"] = [*provenance.get("added", []),
                           {"targets": names, "built_at": _now(), "build_seconds": seconds}]
    with open(final / "build.log", "a", encoding="utf-8") as log:
        log.write(log_path.read_text(encoding="utf-8", errors="replace"))
    tmp = final / f".build.json.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(provenance, indent=2) + "\n")
    os.replace(tmp, final / "build.json")
    log_path.unlink(missing_ok=True)  # its lines are in the build's log now
    _drop_work_when_complete(prof, entries, work)
    say(f"added {', '.join(names)} to {final} in {seconds:.0f} s")
    return Build(dir=final, bin_dir=final / "bin",
                 binaries={n: final / e["file"] for n, e in entries.items()},
                 provenance=provenance, cached=False)


def _drop_work_when_complete(prof: Profile, published: dict, work: Path) -> None:
    """Keep the CMake folder while a target is still unbuilt (adding it is then incremental)."""
    if all(t in published for t in prof.targets):
        shutil.rmtree(work, ignore_errors=True)


def _stream(argv: list[str], step: str, log, log_path: Path, say) -> None:
    """Run ``argv``, copying each output line to the log and to ``say``."""
    log.write(f"$ {' '.join(argv)}\n")
    log.flush()
    say(f"cmake {step}")
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
    )
    tail: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            line = line.rstrip("\n")
            tail = (tail + [line])[-200:]
            say(line)
        code = proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        log.write(f"# {step} interrupted\n")
        raise
    finally:
        log.flush()
    if code != 0:
        raise BuildError(f"cmake {step} failed (exit {code}): {_first_error(tail)}; log: {log_path}")


def _first_error(lines: list[str]) -> str:
    for line in lines:
        if re.search(r"\berror\b|Error|FAILED", line):
            return line.strip()[:300]
    return (lines[-1].strip() if lines else "no output")[:300]


def _provenance(prof, tree, flags, toolchain, key, cmake_dir, seconds, entries, jobs, targets) -> dict[str, Any]:
    return {
        "schema_version": BUILD_SCHEMA_VERSION,
        "framework": "llama.cpp",
        "profile": prof.name,
        "abi": host_abi() if prof.abi == "host" else prof.abi,
        "key": key,
        "llama_cpp_commit": tree.commit,
        "llama_cpp_version": tree.version,
        "build_commit": flags.get("LLAMA_BUILD_COMMIT"),
        "source": tree.provenance(),
        "cmake_flags": flags,
        "toolchain_file": toolchain,
        "targets": [t for t in prof.targets if t in targets],
        "compiler": _compiler(cmake_dir),
        "cmake_version": _cmake_version(),
        "build_machine": {"system": platform.system(), "machine": platform.machine()},
        "jobs": jobs,
        "built_at": _now(),
        "build_seconds": seconds,
        "melt_version": melt_version,
        "binaries": entries,
    }


def _compiler(cmake_dir: Path) -> dict[str, str | None]:
    """C++ compiler id, version and path, from CMake's own probe files."""
    found: dict[str, str | None] = {"id": None, "version": None, "path": None}
    for probe in sorted(cmake_dir.glob("CMakeFiles/*/CMakeCXXCompiler.cmake")):
        text = probe.read_text(errors="replace")
        for field, var in (("id", "ID"), ("version", "VERSION"), ("path", "")):
            name = f"CMAKE_CXX_COMPILER_{var}" if var else "CMAKE_CXX_COMPILER"
            match = re.search(rf'set\({name} "([^"]*)"\)', text)
            if match:
                found[field] = match.group(1)
    return found


def _cmake_version() -> str | None:
    try:
        out = subprocess.run(["cmake", "--version"], capture_output=True, text=True).stdout
    except OSError:
        return None
    match = re.search(r"cmake version (\S+)", out)
    return match.group(1) if match else None



def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")

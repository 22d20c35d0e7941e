"""melt's benchmark app as the virtual iPhone runs it: the app contract on this machine's llama.cpp.

``python -m melt.virtual.iphone_app --melt-out DIR [--melt-tool NAME] [--melt-thermal] -- ARGS``,
started by :class:`melt.virtual.iphone_device.IphoneDevice` in the app's
``Documents`` folder, does what ``frameworks/llama.cpp/ios/main.mm`` does on a
phone:

- runs ``NAME`` (``llama-bench``, the default, or ``llama-completion``) with
  ``ARGS``, its output into ``DIR/stdout.txt`` and ``DIR/stderr.txt``;
- writes the device's thermal state to ``DIR/thermal.txt`` (``start STATE``
  before and ``end STATE`` after; ``now STATE`` alone with ``--melt-thermal``,
  which runs nothing);
- writes ``DIR/exit_code`` last.

As an app's sandbox would, it refuses paths outside its container: ``DIR``
and every argument must be relative, without ``..``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TOOLS = ("llama-bench", "llama-completion")


def _thermal() -> str:
    try:
        return Path(os.environ["MELT_VIRTUAL_THERMAL_FILE"]).read_text().strip() or "unknown"
    except (KeyError, OSError):
        return "unknown"


def _inside(path: str) -> bool:
    return bool(path) and not path.startswith("/") and ".." not in path.split("/")


def main(argv: list[str]) -> int:
    out, tool, probe, args = "", "llama-bench", False, []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            args = argv[i + 1:]
            break
        if a in ("--melt-out", "--melt-tool") and i + 1 < len(argv):
            out, tool = (argv[i + 1], tool) if a == "--melt-out" else (out, argv[i + 1])
            i += 2
            continue
        probe = probe or a == "--melt-thermal"
        i += 1
    if not _inside(out):
        return 2  # only folders inside Documents
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    thermal = folder / "thermal.txt"
    if probe:
        thermal.write_text(f"now {_thermal()}\n")
        return _done(folder, 0)
    thermal.write_text(f"start {_thermal()}\n")
    tools = dict(item.split("=", 1) for item in os.environ.get("MELT_VIRTUAL_TOOLS", "").split(os.pathsep)
                 if "=" in item)
    outside = [a for a in args if a.startswith("/") or ".." in a.split("/")]
    with open(folder / "stdout.txt", "wb") as so, open(folder / "stderr.txt", "wb") as se:
        if tool not in TOOLS or tool not in tools:
            se.write(f"this app runs {' and '.join(TOOLS)}, not {tool}\n".encode())
            code = 2
        elif outside:
            se.write(f"paths outside the app's container: {' '.join(outside)}\n".encode())
            code = 2
        else:
            code = subprocess.run([tools[tool], *args], stdin=subprocess.DEVNULL, stdout=so, stderr=se).returncode
    with open(thermal, "a") as f:
        f.write(f"end {_thermal()}\n")
    return _done(folder, code)


def _done(folder: Path, code: int) -> int:
    tmp = folder / "exit_code.tmp"
    tmp.write_text(f"{code}\n")
    os.replace(tmp, folder / "exit_code")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

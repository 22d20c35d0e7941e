"""Run every benchmark in bench/ (``bench_*.py``) in turn, each with its default arguments.

    python bench/run_all.py [--only NAME ...] [--skip NAME ...] [--list]

Each benchmark runs as its own process with this Python, one after the other
(they would disturb each other's figures side by side), and prints its figures
as it goes. At the end a summary gives each one's exit status and wall time;
the exit status is non-zero when any benchmark failed. The figures are recorded
by hand in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def benches() -> list[Path]:
    return sorted(HERE.glob("bench_*.py"))


def stop(proc: subprocess.Popen) -> int:
    """Interrupt a benchmark so that it stops what it started (phones, adb servers); kill it if it hangs."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            return proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", action="append", default=[], metavar="NAME",
                    help="run only this benchmark (e.g. sampler or bench_sampler.py); repeatable")
    ap.add_argument("--skip", action="append", default=[], metavar="NAME", help="leave this one out; repeatable")
    ap.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    ap.add_argument("--timeout", type=float, default=900, help="seconds before a benchmark counts as failed")
    args = ap.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # keep our lines in order with the benchmarks' output

    def short(p: Path) -> str:
        return p.stem.removeprefix("bench_")

    def picked(p: Path, names: list[str]) -> bool:
        return any(n in (short(p), p.stem, p.name) for n in names)

    chosen = [p for p in benches()
              if (not args.only or picked(p, args.only)) and not picked(p, args.skip)]
    unknown = [n for n in args.only + args.skip if not any(picked(p, [n]) for p in benches())]
    if unknown:
        print(f"no benchmark called {', '.join(unknown)}; there are: "
              f"{', '.join(short(p) for p in benches())}", file=sys.stderr)
        return 2
    if args.list:
        for p in chosen:
            print(p.name)
        return 0

    print(f"{len(chosen)} benchmarks on {platform.machine()}, "
          f"{os.cpu_count()} cores, {time.strftime('%Y-%m-%d %H:%M')}", flush=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    results = []
    for path in chosen:
        print(f"\n=== {path.name} ===", flush=True)
        t = time.monotonic()
        proc = subprocess.Popen([sys.executable, str(path)], env=env)
        try:
            rc = proc.wait(timeout=args.timeout)
        except subprocess.TimeoutExpired:
            print(f"{path.name}: no result within {args.timeout:g} s", file=sys.stderr)
            rc = stop(proc)
            rc = rc if rc else -1
        except KeyboardInterrupt:  # the benchmark got the Ctrl-C too: let it clean up
            print(f"\ninterrupted during {path.name}", file=sys.stderr)
            stop(proc)
            return 130
        results.append((path.name, rc, time.monotonic() - t))

    print("\n| benchmark | exit | wall s |\n| --- | --- | --- |")
    for name, rc, seconds in results:
        print(f"| {name} | {rc}{'' if rc == 0 else ' FAILED'} | {seconds:.0f} |")
    failed = [name for name, rc, _ in results if rc != 0]
    if failed:
        print(f"{len(failed)} of {len(results)} benchmarks failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

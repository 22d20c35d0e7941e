"""Benchmark: the arm64 build under qemu-user against the host build, and what each cost to build.

Not a test: it prints the figures recorded in docs/benchmarks.md.

    python bench/bench_emulation.py [--model PATH] [--reps 3] [-p 16] [-n 8] [--threads 1]

Runs ``llama-bench`` of the cached host build natively and of the cached
``arm64`` build through ``qemu-aarch64-static`` (the same way the virtual
phone runs it, without the phone around it), interleaved, ``--reps`` times,
and prints prefill and decode tokens/s with the slowdown. It also prints
``build_seconds`` from each build's ``build.json``. Both builds must already
be cached (``melt build`` and ``melt build --profile arm64``); the model is
gemma3-270m from melt's cache unless ``--model`` names another GGUF file.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import machine, run  # bench/ is on sys.path when a bench runs


def bench_once(argv: list[str]) -> tuple[float, float, float]:
    """(prefill t/s, decode t/s, wall s) of one llama-bench run."""
    t0 = time.monotonic()
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    wall = time.monotonic() - t0
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    pp = next(r["avg_ts"] for r in rows if r["n_gen"] == 0)
    tg = next(r["avg_ts"] for r in rows if r["n_prompt"] == 0)
    return pp, tg, wall


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("-p", type=int, default=16)
    ap.add_argument("-n", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    from melt.errors import MeltError
    from melt.frameworks.llamacpp.build import build_llamacpp

    qemu = shutil.which("qemu-aarch64-static")
    if qemu is None:
        print("qemu-aarch64-static is not installed (apt-get install qemu-user-static)", file=sys.stderr)
        return 1
    if args.model:
        model = Path(args.model)
    else:
        from melt.models.catalog import ensure_model

        model = ensure_model("gemma3-270m")
    try:  # both are cache hits once built; a cold cache builds them here (minutes)
        builds = {"host": build_llamacpp("host"), "arm64": build_llamacpp("arm64")}
    except MeltError as exc:
        print(f"cannot get the builds: {exc}", file=sys.stderr)
        return 1
    print(machine())
    print(f"model {model.name}; llama-bench -p {args.p} -n {args.n} -t {args.threads} -r 1, "
          f"{args.reps} runs each, interleaved")
    common = ["-m", str(model), "-p", str(args.p), "-n", str(args.n), "-t", str(args.threads),
              "-r", "1", "-o", "jsonl"]
    argv = {"host": [str(builds["host"].binaries["llama-bench"]), *common],
            "arm64": [qemu, str(builds["arm64"].binaries["llama-bench"]), *common]}
    got: dict[str, list[tuple[float, float, float]]] = {k: [] for k in argv}
    for _ in range(args.reps):
        for name, cmd in argv.items():
            got[name].append(bench_once(cmd))
    print(f"{'build':<22} {'built in':>9} {'prefill t/s':>12} {'decode t/s':>11} {'wall s':>7}")
    med = {k: [statistics.median(x[i] for x in v) for i in range(3)] for k, v in got.items()}
    for name, (pp, tg, wall) in med.items():
        label = "host (native)" if name == "host" else "arm64 (qemu-user)"
        built = builds[name].provenance.get("build_seconds")
        print(f"{label:<22} {built if built is not None else '?':>8}s {pp:>12.1f} {tg:>11.2f} {wall:>7.1f}")
    print(f"slowdown under emulation: prefill {med['host'][0] / med['arm64'][0]:.1f}x, "
          f"decode {med['host'][1] / med['arm64'][1]:.1f}x")
    return 0


if __name__ == "__main__":
    run(main)

"""Benchmark of history queries over 100,000 synthetic jobs (400 nightly runs of 50 cells x 5 reps).

Not a test: it prints the figures recorded in docs/benchmarks.md.

    python bench/bench_history.py [--runs 400] [--keep DIR] [--results DIR] [--baseline CHECKOUT]

The jobs are written through the results store (``melt.analysis.synthetic``),
without traces. Then it times, as processes (``melt ...``, the median of
``--repeat`` calls) and as library calls in one process:

- ``melt history --metric decode_tps --device pixel-8``
- ``melt compare --history 10 latest``
- ``melt results list``

``--baseline CHECKOUT`` writes the results with that checkout's code (a git
worktree of an earlier commit) and times its commands first, on the folder
as it wrote it; then this code opens the same folder (adding its indexes to
the old ``melt.db``, timed) and is timed the same way, so the ratios come from
one run on one machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import machine, run  # bench/ is on sys.path when a bench runs

HERE = Path(__file__).resolve()
DEVICES = ("pixel-8", "galaxy-s23", "pixel-7a", "jetson-orin", "rpi-5", "pixel-6", "galaxy-a54",
           "oneplus-12", "jetson-nano", "rock-5b")
DEVICE = "pixel-8"
CLI = "from melt.cli.main import main; main()"
COMMANDS = {
    "history": ["history", "--metric", "decode_tps", "--device", DEVICE],
    "compare": ["compare", "--history", "10", "latest"],
    "list": ["results", "list"],
}


def write(results: Path, n_runs: int, reps: int) -> int:
    """``n_runs`` nightly runs of 50 cells (10 devices x 5 n_gen) through the store; jobs written."""
    from melt.analysis import synthetic as syn
    from melt.store.runs import ResultsStore

    cells = syn.grid(devices=DEVICES, frameworks=("llama.cpp",), models=(("llama-3.2-1b", "Q4_0"),),
                     n_gens=(16, 32, 64, 128, 256))
    syn.make_history(ResultsStore(results), cells, n_runs, repetitions=reps, noise=0.02)
    return n_runs * len(cells) * reps


def library_seconds(results: Path, repeat: int) -> dict[str, float]:
    """The three queries as library calls in this process (the melt on sys.path), median seconds."""
    from melt.analysis.history import compare_history, metric_history
    from melt.store.runs import ResultsStore

    def list_rows(store: Any) -> Any:
        if hasattr(store, "run_summaries"):
            return store.run_summaries()
        from melt.labels import job_labels  # what `melt results list` did before run_summaries

        return [(r.run_id, len(r.journal()), {n for j in r.jobs() for n in job_labels(j)})
                for r in store.runs()]

    calls = {
        "history": lambda s: metric_history(s, "decode_tps", device=DEVICE),
        "compare": lambda s: compare_history(s, "latest", 10),
        "list": list_rows,
    }
    out = {}
    for name, call in calls.items():
        times = []
        for _ in range(repeat):
            store = ResultsStore(results)
            t = time.perf_counter()
            call(store)
            times.append(time.perf_counter() - t)
        out[name] = statistics.median(times)
    return out


def process_seconds(checkout: Path, results: Path, repeat: int) -> dict[str, float]:
    """Each command as a fresh process of the checkout's melt, median wall seconds."""
    env = dict(os.environ, PYTHONPATH=str(checkout), COLUMNS="120")
    out = {}
    for name, argv in COMMANDS.items():
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            # run in the checkout: `python -c` puts the working folder first on sys.path
            done = subprocess.run([sys.executable, "-c", CLI, *argv, "--results", str(results)],
                                  env=env, cwd=checkout, capture_output=True, text=True, timeout=600)
            times.append(time.perf_counter() - t)
            if done.returncode not in (0, 2):  # 2: a regression found, still an answer
                raise SystemExit(f"{name} failed ({done.returncode}): {done.stderr.strip()[-300:]}")
        out[name] = statistics.median(times)
    return out


def in_checkout(checkout: Path, *argv: str) -> Any:
    """Run this file's ``--_do`` step with the checkout's melt; its JSON answer."""
    env = dict(os.environ, PYTHONPATH=f"{checkout}{os.pathsep}{HERE.parent}")
    done = subprocess.run([sys.executable, str(HERE), "--_do", *argv], env=env, capture_output=True,
                          text=True, timeout=7200)
    if done.returncode != 0:
        raise SystemExit(f"step {argv[0]} in {checkout} failed: {done.stderr.strip()[-500:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def do(argv: list[str]) -> None:
    """The steps a checkout runs for the benchmark: write, library."""
    step, results = argv[0], Path(argv[1])
    if step == "write":
        t = time.perf_counter()
        n = write(results, int(argv[2]), int(argv[3]))
        print(json.dumps({"jobs": n, "seconds": time.perf_counter() - t}))
    elif step == "library":
        print(json.dumps(library_seconds(results, int(argv[2]))))
    elif step == "open":
        from melt.store.runs import ResultsStore

        t = time.perf_counter()
        ResultsStore(results).run_ids()
        print(json.dumps({"seconds": time.perf_counter() - t}))


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--_do":
        do(sys.argv[2:])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=400, help="nightly runs (250 jobs each)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=3, help="calls per figure (the median is shown)")
    ap.add_argument("--keep", type=Path, help="write the results here and keep them")
    ap.add_argument("--results", type=Path, help="time an existing folder (an earlier --keep) instead")
    ap.add_argument("--baseline", type=Path, metavar="CHECKOUT",
                    help="write with this checkout and time its commands first, for the ratios")
    args = ap.parse_args()
    here = HERE.parent.parent
    print(f"machine: {machine()}; load average at start {os.getloadavg()[0]:.2f}", flush=True)
    root = args.keep or Path(tempfile.mkdtemp(prefix="melt-bench-history-"))
    results = args.results or root / "results"
    try:
        if not args.results:
            wrote = in_checkout(args.baseline or here, "write", str(results), str(args.runs), str(args.reps))
            print(f"wrote {wrote['jobs']:,} jobs in {args.runs} runs in {wrote['seconds']:.0f} s "
                  f"({'baseline' if args.baseline else 'this'} code)", flush=True)
        base = None
        if args.baseline:
            base = {"process": process_seconds(args.baseline, results, args.repeat),
                    "library": in_checkout(args.baseline, "library", str(results), str(args.repeat))}
        opened = in_checkout(here, "open", str(results))
        now = {"process": process_seconds(here, results, args.repeat),
               "library": in_checkout(here, "library", str(results), str(args.repeat))}
        db = results / "melt.db"
        print(f"melt.db: {db.stat().st_size / 1e6:.1f} MB; this code's first open (adds its indexes, re-reads the older run rows): "
              f"{opened['seconds']:.2f} s; load average at end {os.getloadavg()[0]:.2f}")
        target = {"history": 1.0, "compare": 1.0, "list": 0.3}
        print("| command | target | process | library |" + (" before: process | ratio |" if base else ""))
        print("| --- | --- | --- | --- |" + (" --- | --- |" if base else ""))
        for name, argv in COMMANDS.items():
            row = (f"| `melt {' '.join(argv)}` | ≤ {target[name]:g} s | {now['process'][name]:.2f} s | "
                   f"{now['library'][name]:.3f} s |")
            if base:
                row += f" {base['process'][name]:.2f} s | {now['process'][name] / base['process'][name]:.2f} |"
            print(row)
        if base:
            print("library calls before: " + ", ".join(f"{k} {v:.3f} s" for k, v in base["library"].items()))
    finally:
        if not args.keep and not args.results:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    run(main)

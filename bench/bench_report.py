"""Benchmark of melt's analysis and report on 1,000 synthetic jobs with 10M trace samples.

Not a test: it prints the figures recorded in docs/benchmarks.md.

    python bench/bench_report.py [--jobs 1000] [--samples 10000] [--keep DIR]

Steps timed: writing the synthetic results (not melt's cost, shown for
context), analysis (load the jobs, per-cell statistics with bootstrap CIs),
the report (read every trace, downsample, render the HTML), and, when
/usr/bin/chromium and playwright are present, opening the report in headless
Chromium until every chart is drawn.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import tempfile
import time
from pathlib import Path

from melt.analysis import synthetic as syn
from melt.analysis.frames import load_results
from melt.analysis.metrics import SUMMARY_METRICS
from melt.analysis.stats import cell_stats
from melt.report import build_report
from melt.store.runs import ResultsStore

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]


def cells_for(n_jobs: int, reps: int) -> list[syn.Cell]:
    devices = ("pixel-8", "galaxy-s23", "pixel-7a", "jetson-orin", "rpi-5")
    models = (("llama-3.2-1b", "Q4_0"), ("llama-3.2-1b", "Q8_0"), ("qwen2.5-0.5b", "Q4_K_M"),
              ("qwen2.5-0.5b", "F16"))
    n_gens = (16, 32, 64, 128, 256, 512, 1024)
    cells = syn.grid(devices=devices, frameworks=("llama.cpp", "mlc-llm"), models=models, n_gens=n_gens)
    return cells[: max(1, n_jobs // reps) + 1]  # the last cell fails: jobs with a reason, no trace


def render_seconds(path: Path) -> float | None:
    if not Path(CHROMIUM).exists():
        return None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    with sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
        ctx = p.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, headless=True, args=ARGS)
        page = ctx.new_page()
        t0 = time.perf_counter()
        page.goto(path.as_uri())
        page.wait_for_selector("body[data-charts-rendered]", timeout=120_000)
        seconds = time.perf_counter() - t0
        dom = page.evaluate("() => performance.timing.domContentLoadedEventEnd - performance.timing.navigationStart")
        print(f"(DOMContentLoaded after {dom / 1000:.2f} s)")
        ctx.close()
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--samples", type=int, default=10_000, help="trace rows per job")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--keep", type=Path, help="write the results and report here and keep them")
    args = ap.parse_args()

    root = args.keep or Path(tempfile.mkdtemp(prefix="melt-bench-"))
    store = ResultsStore(root / "results")
    cells = cells_for(args.jobs, args.reps)
    t = time.perf_counter()
    run = syn.make_run(store, cells, repetitions=args.reps, trace_samples=args.samples, noise=0.02,
                       failed={cells[-1].cell_id: "synthetic failure"})
    write_s = time.perf_counter() - t
    n_jobs = len(cells) * args.reps
    n_failed = args.reps

    t = time.perf_counter()
    frames = load_results([run.run_id], store.root, traces=False)
    stats = cell_stats(frames["jobs"], SUMMARY_METRICS)
    analysis_s = time.perf_counter() - t

    out = root / "report.html"
    info = build_report([run], out)
    chromium_s = render_seconds(out)

    print(f"machine: {platform.machine()}, {platform.python_implementation()} {platform.python_version()}, "
          f"{__import__('os').cpu_count()} cores")
    print(f"jobs: {n_jobs} ({len(cells)} cells x {args.reps} reps, {n_failed} failed), "
          f"trace readings (all drawn channels): {info.trace_samples:,}")
    print("| step | figure |\n| --- | --- |")
    print(f"| write synthetic results (context) | {write_s:.1f} s |")
    print(f"| analysis: load jobs + per-cell stats ({len(stats)} cell-metrics) | {analysis_s:.2f} s |")
    for k, v in info.timings.items():
        print(f"| report: {k[:-2]} | {v:.2f} s |")
    print(f"| report: total | {info.seconds:.2f} s |")
    print(f"| HTML size (Plotly inlined) | {info.size_bytes / 1e6:.2f} MB |")
    print(f"| trace points drawn / readings (all channels) | {info.trace_points:,} / {info.trace_samples:,} |")
    print(f"| Chromium: open until every chart is drawn | "
          f"{'n/a' if chromium_s is None else f'{chromium_s:.2f} s'} |")
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

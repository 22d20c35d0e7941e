"""Benchmark of melt's analysis and report on synthetic jobs (1,000 jobs and 10M trace samples by default).

Not a test: it prints the figures recorded in docs/benchmarks.md.

    python bench/bench_report.py [--jobs 1000] [--samples 10000] [--keep DIR] [--results DIR]
    python bench/bench_report.py --jobs 10000 --baseline CHECKOUT   # the scaling ratio

Steps timed: writing the synthetic results (not melt's cost, shown for
context), analysis (load the jobs, per-cell statistics with bootstrap CIs),
the report (read every trace, downsample, render the HTML), and, when
/usr/bin/chromium and playwright are present, opening the report in headless
Chromium: until the first chart is drawn, until every chart is drawn, and
opening one job's trace.

``--baseline CHECKOUT`` runs this same benchmark at 1,000 jobs in another
checkout of melt (a git worktree of an earlier commit) and here at 1,000 jobs,
one after the other in this run, and prints the ratios: how the report grows
from 1,000 to ``--jobs`` jobs, against the earlier code's 1,000-job report.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import machine, run  # bench/ is on sys.path when a bench runs
from melt.analysis import synthetic as syn
from melt.analysis.frames import load_results
from melt.analysis.metrics import SUMMARY_METRICS
from melt.analysis.stats import cell_stats
from melt.report import build_report
from melt.store.runs import ResultsStore

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
BASE_DEVICES = ("pixel-8", "galaxy-s23", "pixel-7a", "jetson-orin", "rpi-5")


def cells_for(n_jobs: int, reps: int) -> list[syn.Cell]:
    """``n_jobs / reps`` cells and one more that fails (jobs with a reason, no trace).

    The first 280 cells are always the same (five devices); more jobs add
    boards named ``board-6``, ``board-7``..., so a 1,000-job run is the same
    whatever the largest run asked.
    """
    models = (("llama-3.2-1b", "Q4_0"), ("llama-3.2-1b", "Q8_0"), ("qwen2.5-0.5b", "Q4_K_M"),
              ("qwen2.5-0.5b", "F16"))
    n_gens = (16, 32, 64, 128, 256, 512, 1024)
    wanted = max(1, n_jobs // reps) + 1
    per_device = 2 * len(models) * len(n_gens)
    extra = max(0, -(-wanted // per_device) - len(BASE_DEVICES))
    devices = BASE_DEVICES + tuple(f"board-{i}" for i in range(len(BASE_DEVICES) + 1,
                                                                len(BASE_DEVICES) + 1 + extra))
    cells = syn.grid(devices=devices, frameworks=("llama.cpp", "mlc-llm"), models=models, n_gens=n_gens)
    return cells[:wanted]


#: Marks set in the page (ms since the navigation started) as charts, tables and a trace are drawn,
#: read by a MutationObserver: a poll from outside would wait for the page's busy main thread.
MARKS = """
window.__marks = {};
new MutationObserver(function (records) {
  records.forEach(function (m) {
    var el = m.target, t = performance.now();
    if (m.attributeName === "data-rendered" && el.hasAttribute("data-figure") && !("first_chart" in __marks))
      __marks.first_chart = t;
    if (m.attributeName === "data-rendered" && el.classList.contains("trace-plot")) __marks.trace = t;
    if (m.attributeName === "data-charts-rendered") __marks.all_charts = t;
    if (m.attributeName === "data-tables-rendered") __marks.tables = t;
  });
}).observe(document, {attributes: true, subtree: true,
                      attributeFilter: ["data-rendered", "data-charts-rendered", "data-tables-rendered"]});
"""


def browser_seconds(path: Path) -> dict[str, float] | None:
    """Seconds from navigation start until the first chart, every chart and every table are
    drawn, and to draw one job's trace once opened; None without Chromium or playwright."""
    if not Path(CHROMIUM).exists():
        return None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    with sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
        ctx = p.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, headless=True,
                                                   args=ARGS, viewport={"width": 1366, "height": 768})
        page = ctx.new_page()
        page.add_init_script(MARKS)
        page.goto(path.as_uri(), wait_until="commit", timeout=300_000)
        page.wait_for_selector("body[data-charts-rendered]", state="attached", timeout=300_000)
        # a report from before the jobs were unpacked has no data-tables-rendered: its tables are in the page
        page.wait_for_function("() => document.body.hasAttribute('data-tables-rendered') || "
                               "!document.querySelector('[data-packed]')", timeout=300_000)
        opened = page.evaluate("""() => {
          const d = document.querySelector('details.trace');
          if (!d) return null;
          const t = performance.now(); d.open = true; return t; }""")
        if opened is not None:
            page.wait_for_selector("details.trace .trace-plot[data-rendered]", state="attached", timeout=120_000)
        marks = page.evaluate("() => window.__marks")
        out = {f"{k}_s": v / 1000 for k, v in marks.items() if k != "trace"}
        out.setdefault("tables_s", out.get("all_charts_s"))  # a page whose tables were never packed
        if opened is not None and "trace" in marks:
            out["trace_open_s"] = (marks["trace"] - opened) / 1000
        out["dom_s"] = page.evaluate(
            "() => performance.timing.domContentLoadedEventEnd - performance.timing.navigationStart") / 1000
        ctx.close()
    return out


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Write (or reuse) the results, time the analysis, the report and Chromium; the figures."""
    root = args.keep or Path(tempfile.mkdtemp(prefix="melt-bench-"))
    fig: dict[str, Any] = {}
    try:
        if args.results:
            store = ResultsStore(args.results)
            run = store.open_run("latest")
            fig["write_s"] = None
        else:
            store = ResultsStore(root / "results")
            cells = cells_for(args.jobs, args.reps)
            t = time.perf_counter()
            run = syn.make_run(store, cells, repetitions=args.reps, trace_samples=args.samples, noise=0.02,
                               failed={cells[-1].cell_id: "synthetic failure"})
            fig["write_s"] = time.perf_counter() - t
        t = time.perf_counter()
        frames = load_results([run.run_id], store.root, traces=False)
        stats = cell_stats(frames["jobs"], SUMMARY_METRICS)
        fig["analysis_s"] = time.perf_counter() - t
        fig["cell_metrics"] = len(stats)
        fig["jobs"] = len(frames["jobs"])
        fig["failed"] = int((frames["jobs"]["status"] != "ok").sum())
        out = root / "report.html"
        info = build_report([run], out)
        fig.update({f"report_{k}": v for k, v in info.timings.items()})
        fig.update(report_total_s=info.seconds, html_bytes=info.size_bytes, trace_points=info.trace_points,
                   trace_samples=info.trace_samples, traces=info.traces,
                   traces_beside_bytes=info.traces_bytes)
        fig["browser"] = browser_seconds(out)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return fig


def print_table(fig: dict[str, Any]) -> None:
    b = fig.get("browser") or {}

    def s(key: str) -> str:
        return "n/a" if b.get(key) is None else f"{b[key]:.2f} s"

    print(f"jobs: {fig['jobs']} ({fig['failed']} failed), trace readings (all drawn channels): "
          f"{fig['trace_samples']:,}")
    print("| step | figure |\n| --- | --- |")
    if fig.get("write_s") is not None:
        print(f"| write synthetic results (context) | {fig['write_s']:.1f} s |")
    print(f"| analysis: load jobs + per-cell stats ({fig['cell_metrics']} cell-metrics) | {fig['analysis_s']:.2f} s |")
    for k, v in fig.items():
        if k.startswith("report_") and k != "report_total_s":
            print(f"| report: {k[len('report_'):-2]} | {v:.2f} s |")
    print(f"| report: total | {fig['report_total_s']:.2f} s |")
    print(f"| HTML size (Plotly inlined) | {fig['html_bytes'] / 1e6:.2f} MB |")
    if fig.get("traces_beside_bytes"):
        print(f"| trace files beside it (loaded when a trace is opened) | {fig['traces_beside_bytes'] / 1e6:.2f} MB |")
    print(f"| trace points drawn / readings (all channels) | {fig['trace_points']:,} / {fig['trace_samples']:,} |")
    print(f"| Chromium: first chart drawn | {s('first_chart_s')} |")
    print(f"| Chromium: every chart drawn | {s('all_charts_s')} |")
    print(f"| Chromium: every table shown (the jobs unpacked) | {s('tables_s')} |")
    print(f"| Chromium: one job's trace opened and drawn | {s('trace_open_s')} |")


_BASE_ROWS = {"html_bytes": (r"\| HTML size[^|]*\| ([\d.]+) MB", 1e6),
              "all_charts_s": (r"\| Chromium: (?:open until every chart is drawn|every chart drawn) \| ([\d.]+) s", 1),
              "report_total_s": (r"\| report: total \| ([\d.]+) s", 1)}


def baseline(checkout: Path, args: argparse.Namespace) -> dict[str, float]:
    """This benchmark at 1,000 jobs in another checkout (its own code, run as a process);
    the figures read from its table."""
    cmd = [sys.executable, str(checkout / "bench" / "bench_report.py"), "--jobs", "1000",
           "--samples", str(args.samples), "--reps", str(args.reps)]
    env = dict(os.environ, PYTHONPATH=str(checkout))
    done = subprocess.run(cmd, cwd=checkout, env=env, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise SystemExit(f"the baseline benchmark failed: {done.stderr.strip().splitlines()[-1:]}")
    print(f"baseline ({checkout.name}, 1,000 jobs):\n{done.stdout.strip()}\n")
    out = {}
    for key, (pattern, unit) in _BASE_ROWS.items():
        m = re.search(pattern, done.stdout)
        if m:
            out[key] = float(m.group(1)) * unit
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--samples", type=int, default=10_000, help="trace rows per job")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--keep", type=Path, help="write the results and report here and keep them")
    ap.add_argument("--results", type=Path, help="report the latest run of this results folder instead of "
                                                 "writing one (a folder an earlier --keep wrote)")
    ap.add_argument("--baseline", type=Path, metavar="CHECKOUT",
                    help="also run 1,000 jobs in this checkout and here, and print the ratios")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = ap.parse_args()
    print(f"machine: {machine()}; load average at start {os.getloadavg()[0]:.2f}")
    base = here_1k = None
    if args.baseline:
        base = baseline(args.baseline, args)
        small = argparse.Namespace(**{**vars(args), "jobs": 1000, "keep": None, "results": None})
        here_1k = measure(small)
        print(f"this code, {here_1k['jobs']:,} jobs:")
        print_table(here_1k)
        print()
    fig = measure(args)
    print(f"this code, {fig['jobs']:,} jobs:")
    print_table(fig)
    print(f"load average at end {os.getloadavg()[0]:.2f}")
    if base and here_1k:
        b1k, b = here_1k.get("browser") or {}, fig.get("browser") or {}
        print("\n| ratio | figure |\n| --- | --- |")
        print(f"| HTML size: {args.jobs:,} jobs now / 1,000 jobs before | "
              f"{fig['html_bytes'] / base['html_bytes']:.2f} |")
        print(f"| HTML size: 1,000 jobs now / 1,000 jobs before | {here_1k['html_bytes'] / base['html_bytes']:.2f} |")
        if "all_charts_s" in base and b.get("all_charts_s"):
            print(f"| every chart drawn: {args.jobs:,} jobs now / 1,000 jobs before | "
                  f"{b['all_charts_s'] / base['all_charts_s']:.2f} |")
            print(f"| every chart drawn: 1,000 jobs now / 1,000 jobs before | "
                  f"{b1k['all_charts_s'] / base['all_charts_s']:.2f} |")
        print(f"| report build: {args.jobs:,} jobs now / 1,000 jobs before | "
              f"{fig['report_total_s'] / base['report_total_s']:.2f} |")
        print(f"| jobs: {args.jobs:,} / 1,000 | {fig['jobs'] / here_1k['jobs']:.2f} |")
    if args.json:
        print(json.dumps({"baseline_1000": base, "now_1000": here_1k, "now": fig}, default=str))
    return 0


if __name__ == "__main__":
    run(main)

"""``melt report``: the HTML report of one run or many."""

from __future__ import annotations

from pathlib import Path

import click

from melt.cli.common import results_option, results_path
from melt.store.runs import ResultsStore


@click.command()
@click.argument("run_ids", nargs=-1, required=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=Path("report.html"),
              show_default=True, help="HTML file to write.")
@click.option("--title", help="Page title (default: the run ids).")
@click.option("--plotly-js", type=click.Choice(["inline", "beside"]), default="inline", show_default=True,
              help="inline: one self-contained file; beside: plotly.min.js written once next to it.")
@click.option("--trace-values", type=click.IntRange(min=0), default=None,
              help="Budget of trace values embedded in the whole report (default 300000, ~1.6 MB).")
@click.option("--traces", "traces_mode", type=click.Choice(["auto", "inline", "beside"]), default="auto",
              show_default=True,
              help="inline: every job's trace in the page; beside: in REPORT-data/traces-N.js next to it, "
              "loaded when a trace is opened; auto: inline up to about 4 MB of trace data.")
@click.option("--perfetto-traces", is_flag=True,
              help="Also write each job's full telemetry and phases as a Chrome/Perfetto JSON trace in "
              "REPORT-traces/ beside the report, linked from the job's trace.")
@results_option
def report(run_ids: tuple[str, ...], output: Path, title: str | None, plotly_js: str,
           trace_values: int | None, traces_mode: str, perfetto_traces: bool,
           results_dir: Path | None) -> None:
    """Write an HTML report of RUN_IDS (ids, unique prefixes, `latest` or run folders).

    The page works offline: the best configuration per criterion (fastest,
    least energy per token, best quality, Pareto sets), summary with
    confidence intervals, comparison charts, failed jobs with reasons,
    per-job traces and provenance.
    """
    from melt.report.build import TRACE_VALUES, build_report

    store = ResultsStore(results_path(results_dir))
    runs = [store.open_run(r) for r in run_ids]
    try:
        info = build_report(runs, output, title=title, plotly_js=plotly_js,
                            trace_values=TRACE_VALUES if trace_values is None else trace_values,
                            perfetto=perfetto_traces, traces=traces_mode)
    except OSError as exc:
        raise click.ClickException(f"could not write the report: {exc}") from None
    extra = f" (+ {info.plotly_js})" if info.plotly_js else ""
    if info.traces_dir is not None:
        extra += f" (+ traces in {info.traces_dir}, {info.traces_bytes / 1e6:.1f} MB: keep them beside it)"
    if info.perfetto_dir is not None:
        extra += f" (+ {info.perfetto_traces} Perfetto traces in {info.perfetto_dir})"
    click.echo(f"wrote {info.path}{extra}: {info.size_bytes / 1e6:.1f} MB, {info.jobs} jobs "
               f"({info.failed} failed), {info.cells} cells, {info.charts} charts, {info.traces} traces "
               f"in {info.seconds:.1f} s", err=True)

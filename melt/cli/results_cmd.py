"""``melt results``: list, show and export stored runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from melt.cli.common import console, echo_json, json_option, results_option, results_path
from melt.store.runs import ResultsStore

@click.group()
def results() -> None:
    """Inspect and export stored runs."""


def _say_unreadable(store: ResultsStore) -> None:
    """One line on stderr per run folder that could not be read (never hidden)."""
    for run_id, reason in store.unreadable:
        click.echo(f"could not read run {run_id}: {reason}", err=True)


@results.command("list")
@results_option
@json_option
def list_runs(results_dir: Path | None, as_json: bool) -> None:
    """List runs, oldest first.

    The creation time is shown from 100 columns up (a run id starts with its
    UTC creation time); --json has every field. `labels` are every label
    among the run's jobs (simulated, synthetic, emulated, stand-in).
    """
    store = ResultsStore(results_path(results_dir))
    rows = store.run_summaries()
    _say_unreadable(store)
    if as_json:
        echo_json(rows)
        return
    from melt.cli.results_view import print_runs

    if rows:
        print_runs(console(), rows)
    else:
        console().print(f"no runs in {store.root}/")


@results.command("show")
@click.argument("run_id")
@results_option
@json_option
def show(run_id: str, results_dir: Path | None, as_json: bool) -> None:
    """Show the jobs of RUN_ID (an id, a unique prefix, or `latest`).

    One block per cell (device, framework, model, workload and the swept
    parameters), its metrics as rows, the median and each repetition as
    columns; failed jobs with their reasons. Fits 80 columns (a CI log).
    Ends with the provenance of the first job that ran (else the first
    job): only what its record holds, so a job that failed before its build
    says `no build recorded`.
    """
    run = ResultsStore(results_path(results_dir)).open_run(run_id)
    data = run.as_dict()
    if as_json:
        echo_json(data)
        return
    from melt.cli.results_view import print_jobs, provenance_line

    out = console()
    out.print(f"run {data['run_id']} ({data['experiment']}, {data['status']}) in {run.dir}")
    print_jobs(out, data["jobs"])
    line = provenance_line(data["jobs"], data.get("melt_version"))
    if line:
        from rich.text import Text

        out.print()
        out.print(Text(line), style="dim")
    _print_stops(out, data)


def _print_stops(out: Any, data: dict[str, Any]) -> None:
    """Why a run stopped, and device settings it left changed (with the command that restores each)."""
    from rich.text import Text

    if data.get("error"):
        out.print(Text(f"stopped by: {data['error']}; finish it with: melt run --resume {data['run_id']}"),
                  style="yellow")
    for f in data.get("restore_failures") or []:
        out.print(Text(f"warning: {f['device']}: {f['knob']} was not restored after the run ({f['error']})"),
                  style="yellow")
        if f.get("by_hand"):  # on one line of its own, to be copied whole
            out.print("  restore it by hand:")
            out.print(Text(f"  {f['by_hand']}"), soft_wrap=True)


@results.command("export")
@click.argument("run_ids", nargs=-1, required=True)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "json", "parquet", "llama-bench-json", "llama-bench-jsonl", "llama-bench-sql",
                       "perfetto"]),
    default="csv",
    show_default=True,
    help="llama-bench-* write what `llama-bench -o json|jsonl|sql` wrote for each bench job, as it "
    "printed it (reconstructed from the record for runs whose output lacks it), plus melt_* fields; "
    "llama.cpp's scripts/compare-llama-bench.py reads them. perfetto writes a Chrome/Perfetto JSON "
    "trace: a process per job with telemetry, its phases as slices and a counter track per channel, "
    "on the device's clock (open it in ui.perfetto.dev).",
)
@click.option(
    "--build-commit",
    metavar="run|TEXT",
    help="llama-bench-* only: write this as build_commit instead of the build's commit; `run` writes "
    "each run's id, so compare-llama-bench.py -b RUN_A -c RUN_B compares two runs of one build.",
)
@click.option("--job", "job_id", metavar="JOB_ID",
              help="perfetto only: export this job alone (its id or a unique prefix; default: every job "
              "with telemetry, one process each).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="File to write (default: stdout; parquet needs a file).")
@results_option
def export(run_ids: tuple[str, ...], fmt: str, build_commit: str | None, job_id: str | None,
           output: Path | None, results_dir: Path | None) -> None:
    """Export the jobs of RUN_IDS as one flat table (a row per job, a column per metric).

    The llama-bench-* formats give llama-bench's test rows instead: one per
    test (pp, tg) of each successful bench job; repetitions stay separate rows.
    The perfetto format gives each job's telemetry and phases as a trace.

    \b
    Examples:
      melt results export latest --format csv -o runs.csv
      melt results export latest --format perfetto --job 3f2a -o job.json
      melt results export latest --format llama-bench-sql | sqlite3 llama-bench.sqlite
      melt results export RUN_A RUN_B --format llama-bench-jsonl --build-commit run -o both.jsonl
      python3 scripts/compare-llama-bench.py -t llama-bench -i both.jsonl -b RUN_A -c RUN_B
    """
    from melt.analysis.frames import jobs_frame

    store = ResultsStore(results_path(results_dir))
    runs = [store.open_run(r) for r in run_ids]
    if job_id is not None and fmt != "perfetto":
        raise click.UsageError("--job applies to --format perfetto only")
    if fmt == "perfetto":
        _export_perfetto(runs, job_id, build_commit, output)
        return
    if fmt.startswith("llama-bench-"):
        from melt.analysis.export import bench_jobs, llama_bench_rows, render

        if build_commit is not None and not build_commit.strip():
            raise click.UsageError("--build-commit needs a non-empty value (`run` or a label)")
        rows = llama_bench_rows(bench_jobs(runs), build_commit=build_commit)
        if not rows:
            raise click.ClickException(
                f"nothing to export: no successful bench job in {', '.join(r.run_id for r in runs)}")
        text = render(rows, fmt.removeprefix("llama-bench-"))
        output.write_text(text, encoding="utf-8") if output else click.echo(text, nl=not text.endswith("\n"))
        if output:
            click.echo(f"wrote {len(rows)} llama-bench rows to {output}", err=True)
        return
    if build_commit is not None:
        raise click.UsageError("--build-commit applies to the llama-bench-* formats only")
    frame = jobs_frame(runs)
    if fmt == "parquet":
        if output is None:
            raise click.UsageError("--format parquet needs -o FILE")
        frame.to_parquet(output, index=False)
    elif fmt == "csv":
        text = frame.to_csv(index=False)
        output.write_text(text) if output else click.echo(text, nl=False)
    else:
        text = json.dumps(json.loads(frame.to_json(orient="records")), indent=2)
        output.write_text(text + "\n") if output else click.echo(text)
    if output:
        click.echo(f"wrote {len(frame)} jobs to {output}", err=True)


def _export_perfetto(runs: list[Any], job_id: str | None, build_commit: str | None,
                     output: Path | None) -> None:
    import sys

    from melt.analysis.perfetto import trace_jobs, write_trace

    if build_commit is not None:
        raise click.UsageError("--build-commit applies to the llama-bench-* formats only")
    jobs = trace_jobs(runs, job_id)
    if output is None:
        write_trace(jobs, sys.stdout)
        return
    try:
        with output.open("w", encoding="utf-8") as f:
            n = write_trace(jobs, f)
    except OSError as exc:
        raise click.ClickException(f"could not write {output}: {exc.strerror or exc}") from None
    click.echo(f"wrote {len(jobs)} jobs ({n} trace events) to {output}", err=True)


@results.command("reindex")
@results_option
def reindex(results_dir: Path | None) -> None:
    """Rebuild the SQLite index (results/melt.db) from the run folders."""
    store = ResultsStore(results_path(results_dir))
    n = store.reindex()
    _say_unreadable(store)
    read = len(store.run_ids()) - len(store.unreadable)
    click.echo(f"indexed {n} jobs from {read} runs in {store.root / 'melt.db'}")

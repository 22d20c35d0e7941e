"""``melt results``: list, show and export stored runs."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from melt.cli.common import console, echo_json, json_option, results_option, results_path
from melt.store.runs import ResultsStore

# Metrics shown in the terminal table, in this order, when present.
SHOWN_METRICS = ("prefill_tps", "decode_tps", "ttft_ms", "itl_ms_p50", "load_ms", "energy_per_token_decode_j", "temp_max_c")


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e5 else f"{v:.0f}"
    return str(v)


def _swept_params(jobs: list[dict]) -> dict[str, list[str]]:
    """Per workload, the parameters that vary across its jobs (the sweep's axes)."""
    values: dict[str, dict[str, set]] = {}
    for job in jobs:
        for k, v in (job.get("params") or {}).items():
            values.setdefault(job["workload"], {}).setdefault(k, set()).add(json.dumps(v, sort_keys=True))
    return {w: sorted(k for k, vs in params.items() if len(vs) > 1) for w, params in values.items()}


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
    """List runs, oldest first."""
    store = ResultsStore(results_path(results_dir))
    rows = []
    for run in store.runs():
        jobs = run.journal()
        rows.append({
            "run_id": run.run_id,
            "experiment": (run.manifest.get("experiment") or {}).get("name"),
            "created_at": run.manifest.get("created_at"),
            "status": run.manifest.get("status"),
            "jobs_ok": sum(1 for e in jobs.values() if e.get("status") == "ok"),
            "jobs_total": run.manifest.get("total_jobs"),
            "path": str(run.dir),
        })
    _say_unreadable(store)
    if as_json:
        echo_json(rows)
        return
    from rich.table import Table

    table = Table("run id", "experiment", "created (UTC)", "status", "ok/total")
    table.columns[0].no_wrap = True
    for r in rows:
        table.add_row(r["run_id"], r["experiment"] or "", (r["created_at"] or "")[:19],
                      r["status"] or "", f"{r['jobs_ok']}/{r['jobs_total'] or '?'}")
    console().print(table if rows else f"no runs in {store.root}/")


@results.command("show")
@click.argument("run_id")
@results_option
@json_option
def show(run_id: str, results_dir: Path | None, as_json: bool) -> None:
    """Show the jobs of RUN_ID (an id, a unique prefix, or `latest`)."""
    run = ResultsStore(results_path(results_dir)).open_run(run_id)
    data = run.as_dict()
    if as_json:
        echo_json(data)
        return
    from rich.table import Table

    out = console()
    if not sys.stdout.isatty():
        out.width = 200
    out.print(f"run {data['run_id']} ({data['experiment']}, {data['status']}) in {run.dir}")
    swept = _swept_params(data["jobs"])
    table = Table("device", "workload", "sweep", "rep", "status", *SHOWN_METRICS, "reason")
    for job in data["jobs"]:
        params = " ".join(f"{k}={job['params'].get(k)}" for k in swept.get(job["workload"], ()))
        m = job.get("metrics") or {}
        tags = [t for t, on in (("sim", job.get("simulated")), ("emu", job.get("emulated"))) if on]
        table.add_row(
            job["device"] + (f" ({', '.join(tags)})" if tags else ""), job["workload"], params,
            str(job["repetition"]), job["status"], *(_fmt(m.get(k)) for k in SHOWN_METRICS),
            (job.get("reason") or "")[:120],
        )
    out.print(table)
    if data["jobs"]:
        prov = data["jobs"][0].get("provenance") or {}
        build = prov.get("framework_build") or {}
        out.print(f"provenance of the first job: melt {prov.get('melt_version')}, "
                      f"llama.cpp {(build.get('llama_cpp_commit') or '?')[:12]} ({build.get('profile', '?')}), "
                      f"model sha256 {(prov.get('model') or {}).get('sha256', '?')[:12]}…, "
                  f"command: {prov.get('command', '?')}", style="dim")
    _print_stops(out, data)


def _print_stops(out: Any, data: dict[str, Any]) -> None:
    """Why a run stopped, and device settings it left changed (with the command that restores each)."""
    from rich.text import Text

    if data.get("error"):
        out.print(Text(f"stopped by: {data['error']}; finish it with: melt run --resume {data['run_id']}"),
                  style="yellow", soft_wrap=True)
    for f in data.get("restore_failures") or []:
        out.print(Text(f"warning: {f['device']}: {f['knob']} was not restored after the run ({f['error']})"),
                  style="yellow", soft_wrap=True)
        if f.get("by_hand"):
            out.print(Text(f"  restore it by hand: {f['by_hand']}"), soft_wrap=True)


@results.command("export")
@click.argument("run_ids", nargs=-1, required=True)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "json", "parquet", "llama-bench-json", "llama-bench-jsonl", "llama-bench-sql"]),
    default="csv",
    show_default=True,
    help="llama-bench-* write what `llama-bench -o json|jsonl|sql` writes, for existing scripts "
    "such as compare-llama-bench.py (bench jobs only).",
)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="File to write (default: stdout for csv/json).")
@results_option
def export(run_ids: tuple[str, ...], fmt: str, output: Path | None, results_dir: Path | None) -> None:
    """Export the jobs of RUN_IDS as one flat table (a row per job, a column per metric).

    \b
    Examples:
      melt results export latest --format csv -o runs.csv
      melt results export latest --format llama-bench-sql | sqlite3 llama-bench.sqlite
    """
    from melt.analysis.frames import jobs_frame

    store = ResultsStore(results_path(results_dir))
    runs = [store.open_run(r) for r in run_ids]
    if fmt.startswith("llama-bench-"):
        from melt.analysis.export import export_llama_bench

        records = [j for run in runs for j in run.jobs()]
        text = export_llama_bench(records, fmt.removeprefix("llama-bench-"))
        output.write_text(text) if output else click.echo(text, nl=not text.endswith("\n"))
        if output:
            click.echo(f"wrote {output}", err=True)
        return
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


@results.command("reindex")
@results_option
def reindex(results_dir: Path | None) -> None:
    """Rebuild the SQLite index (results/melt.db) from the run folders."""
    store = ResultsStore(results_path(results_dir))
    n = store.reindex()
    _say_unreadable(store)
    read = len(store.run_ids()) - len(store.unreadable)
    click.echo(f"indexed {n} jobs from {read} runs in {store.root / 'melt.db'}")

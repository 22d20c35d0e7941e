"""``melt run``: run an experiment, or finish an interrupted one."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import click

from melt.cli.common import results_option, results_path, stderr_console
from melt.errors import JobsFailed


class ProgressEvents:
    """Shows a rich progress bar for the jobs of a run, on stderr."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = stderr_console()
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[job]}"),
            console=self.console,
            transient=False,
        )
        self.task = None
        self.transfers: dict[str, Any] = {}
        self.failed = 0
        self.started = False

    def _start(self) -> None:
        if not self.started:
            self.progress.start()
            self.started = True

    def stage(self, message: str) -> None:
        from rich.markup import escape

        self.console.print(f"[dim]… {escape(message)}[/dim]")

    def run_started(self, run_id: str, total: int, done: int) -> None:
        self.console.print(f"run [bold]{run_id}[/bold]: {total} jobs, {done} already done")
        self._start()
        self.task = self.progress.add_task("jobs", total=total, completed=done, job="")

    def transfer(self, name: str, done: int, total: int) -> None:
        """Progress of a push to a device (large models take a while)."""
        if total < (8 << 20):
            return
        self._start()
        task = self.transfers.get(name)
        if task is None:
            task = self.transfers[name] = self.progress.add_task(f"push {name}", total=total, job="")
        self.progress.update(task, completed=done)

    def job_started(self, job: Any, warmup: bool) -> None:
        label = f"{job.device} {job.workload} #{job.repetition}" + (" (warm-up)" if warmup else "")
        self.progress.update(self.task, job=label)

    def job_finished(self, job: Any, record: dict) -> None:
        if record["status"] != "ok":
            self.failed += 1
            self.progress.console.print(
                f"[red]failed[/red] {job.device} {job.workload} #{job.repetition}: {record['reason']}"
            )
        self.progress.advance(self.task)

    def close(self) -> None:
        if self.started:
            self.progress.stop()


@click.command()
@click.argument("experiment", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--resume", "resume", metavar="RUN_ID", help="Finish the missing and failed jobs of an earlier run.")
@results_option
def run(experiment: Path | None, resume: str | None, results_dir: Path | None) -> None:
    """Run EXPERIMENT (a YAML file) and store every job under the results folder.

    \b
    The experiment expands to devices x frameworks x models x workloads x
    parameters x repetitions. A failed job is stored with its reason and the
    rest go on. Stop it any time (Ctrl-C); `melt run --resume RUN_ID` then
    finishes only what is missing.

    \b
    Examples:
      melt run experiments/quickstart.yaml
      melt run --resume 20261122-193000-a1b2

    Prints the run id on stdout when done. Exit codes: 0 every job ok,
    3 the run finished but some jobs failed (their reasons are stored),
    1 bad input or another error, 130 interrupted.
    """
    from melt.runner.engine import resume_run, run_experiment

    if (experiment is None) == (resume is None):
        raise click.UsageError("give an EXPERIMENT file or --resume RUN_ID (one of them)")
    events = ProgressEvents()
    try:
        if resume:
            result = resume_run(resume, results_dir=results_path(results_dir), events=events)
        else:
            result = run_experiment(experiment, results_dir=results_path(results_dir), events=events)
    finally:
        events.close()
    jobs = result.jobs()
    ok = sum(1 for j in jobs if j["status"] == "ok")
    where = f" --results {shlex.quote(str(results_dir))}" if results_dir is not None else ""
    events.console.print(f"{ok}/{len(jobs)} jobs ok, results in [bold]{result.dir}[/bold]")
    events.console.print(f"see: melt results show {result.run_id}{where}", soft_wrap=True)
    click.echo(result.run_id)
    if ok < len(jobs):
        raise JobsFailed(f"{len(jobs) - ok} of {len(jobs)} jobs failed; their reasons are stored with the run")

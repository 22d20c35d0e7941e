"""``melt run``: run an experiment, or finish an interrupted one."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import click

from melt.cli.common import results_option, results_path, stderr_console
from melt.errors import JobsFailed


class ProgressEvents:
    """One combined Rich progress display on stderr: all jobs, and a row per device.

    Every string that comes from the user (device and workload names, failure
    reasons) is shown as text, never as Rich markup.
    """

    def __init__(self) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        from melt.cli.progress_columns import CountColumn

        self.console = stderr_console()
        self.progress = Progress(
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            CountColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[job]}", markup=False),
            console=self.console,
            transient=False,
        )
        self.task = None
        self.devices: dict[str, Any] = {}
        self.transfers: dict[str, Any] = {}
        self.builds: dict[str, Any] = {}  # a Rich task id, or the last percent printed to a log
        self.failed = 0
        self.started = False

    def _start(self) -> None:
        if not self.started:
            self.progress.start()
            self.started = True

    def _print(self, *parts: tuple[str, str]) -> None:
        from rich.text import Text

        self.progress.console.print(Text.assemble(*parts), soft_wrap=True)

    def stage(self, message: str) -> None:
        self._print(("… " + message, "dim"))

    def run_started(self, run_id: str, total: int, done: int) -> None:
        self._print(("run ", ""), (run_id, "bold"), (f": {total} jobs, {done} already done", ""))
        self._start()
        self.task = self.progress.add_task("all jobs", total=total, completed=done, job="")

    def plan(self, per_device: dict[str, tuple[int, int]]) -> None:
        """Jobs per device (total, already done): one row each when there are several."""
        if len(per_device) < 2:
            return
        for name, (total, done) in per_device.items():
            self.devices[name] = self.progress.add_task(f"  {name}", total=total, completed=done, job="")

    def transfer(self, name: str, done: int, total: int) -> None:
        """Progress of a push to a device (large models take a while)."""
        if total < (8 << 20):
            return
        if not self.console.is_terminal:  # a log or pipe: plain lines, not a redrawn row
            from melt.cli.progress_columns import PlainProgress

            lines = self.transfers.get(name)
            if lines is None:
                lines = self.transfers[name] = PlainProgress(f"push {name}", lambda line: self._print((line, "")))
            lines(done, total)
            return
        self._start()
        task = self.transfers.get(name)
        if task is None:
            task = self.transfers[name] = self.progress.add_task(f"push {name}", total=total, job="",
                                                                  bytes=True)
        self.progress.update(task, completed=done)

    def build_output(self, label: str, line: str) -> None:
        """A line of a framework build that this run started: a bar with what it is doing."""
        from melt.cli.build_progress import build_step

        step = build_step(line)
        if step is None or step.percent is None:
            return
        shown = self.builds.get(label)
        if not self.console.is_terminal:  # a log or pipe: one plain line per tenth, and the end
            if shown is None or step.percent >= shown + 10 or (step.percent >= 100 > shown):
                self.builds[label] = step.percent
                self._print((f"building {label} {step.percent:.0f}% {step.doing}", ""))
            return
        self._start()
        if shown is None:
            shown = self.builds[label] = self.progress.add_task(f"build {label}", total=100, job="",
                                                                 percent=True)
        self.progress.update(shown, completed=step.percent, job=step.doing)

    def job_started(self, job: Any, warmup: bool) -> None:
        label = f"{job.workload} #{job.repetition}" + (" (warm-up)" if warmup else "")
        row = self.devices.get(job.device)
        if row is not None:
            self.progress.update(row, job=label)
        else:
            self.progress.update(self.task, job=f"{job.device} {label}")

    def job_finished(self, job: Any, record: dict) -> None:
        if record["status"] != "ok":
            self.failed += 1
            self._print(("failed", "red"), (f" {job.device} {job.workload} #{job.repetition}: "
                                            f"{record['reason']}", ""))
        self.progress.advance(self.task)
        row = self.devices.get(job.device)
        if row is not None:
            self.progress.advance(row)
            self.progress.update(row, job="")

    def close(self) -> None:
        if self.started:
            self.progress.stop()


def _check_experiment(path: Path) -> None:
    """Names that only analysis knows: an unknown ``adaptive.metric`` would never narrow."""
    from melt.analysis.metrics import is_known_metric, known_metric_names
    from melt.config.loader import load_experiment
    from melt.errors import UnknownNameError

    spec = load_experiment(path)
    if spec.adaptive is not None and not is_known_metric(spec.adaptive.metric):
        raise UnknownNameError("adaptive.metric", spec.adaptive.metric, known_metric_names())


@click.command()
@click.argument("experiment", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--resume", "resume", metavar="RUN_ID", help="Finish the missing and failed jobs of an earlier run.")
@click.option("--farm", "farm", metavar="[URL]", default=None, is_flag=False, flag_value="local",
              help="Run on a device farm through this Redis broker (redis://[:PASSWORD@]HOST:6379/0; "
                   "alone or `local`: the farm `melt farm up` started): each job goes to its device's "
                   "queue, records come back here. Needs the farm key ($MELT_FARM_KEY, or `melt farm key "
                   "new`) and the farm extra.")
@results_option
def run(experiment: Path | None, resume: str | None, farm: str | None, results_dir: Path | None) -> None:
    """Run EXPERIMENT (a YAML file) and store every job under the results folder.

    \b
    The experiment expands to devices x frameworks x models x workloads x
    parameters x repetitions. A failed job is stored with its reason and the
    rest go on. Stop it any time (Ctrl-C); `melt run --resume RUN_ID` then
    finishes only what is missing.

    \b
    Jobs of different devices run in parallel (one at a time per device).
    With --farm, every job goes to the Celery worker that serves its device
    (see `melt farm`); its record is stored here as a local run stores it.

    \b
    Examples:
      melt run experiments/quickstart.yaml
      melt run --resume 20261122-193000-a1b2
      melt run experiments/sweep.yaml --farm redis://farm-host:6379/0
      melt run experiments/quickstart-android.yaml --farm    (after `melt farm up`)

    Prints the run id on stdout when done. Exit codes: 0 every job ok,
    3 the run finished but some jobs failed (their reasons are stored),
    1 bad input or another error (a run stopped part-way says how to
    resume it), 130 interrupted.
    """
    from melt.runner.engine import resume_run, run_experiment

    if farm is not None and farm != "local" and "://" not in farm:
        raise click.UsageError(f"--farm {farm}: give a broker URL (redis://...) or local; a bare --farm "
                               "goes after EXPERIMENT")
    if (experiment is None) == (resume is None):
        raise click.UsageError("give an EXPERIMENT file or --resume RUN_ID (one of them)")
    if experiment is not None:
        _check_experiment(experiment)
    pool = None
    if farm is not None:
        from melt.extras import require

        require("farm", "melt run --farm")
        from melt.farm.app import hide_password_in_title
        from melt.farm.local import resolve_broker
        from melt.farm.submit import FarmPool

        hide_password_in_title()
        pool = FarmPool(resolve_broker(farm))
    events = ProgressEvents()
    try:
        if resume:
            result = resume_run(resume, results_dir=results_path(results_dir), events=events, pool=pool)
        else:
            result = run_experiment(experiment, results_dir=results_path(results_dir), events=events,
                                    pool=pool)
    finally:
        events.close()
    jobs = result.jobs()
    ok = sum(1 for j in jobs if j["status"] == "ok")
    where = f" --results {shlex.quote(str(results_dir))}" if results_dir is not None else ""
    events.console.print(f"{ok}/{len(jobs)} jobs ok, results in {result.dir}", soft_wrap=True)
    events.console.print(f"see: melt results show {result.run_id}{where}", soft_wrap=True)
    click.echo(result.run_id)
    if ok < len(jobs):
        raise JobsFailed(f"{len(jobs) - ok} of {len(jobs)} jobs failed; their reasons are stored with the run")

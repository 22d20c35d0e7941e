"""Run an experiment: expand its jobs, hand them to a pool, store every record.

The pool runs the jobs (this host's devices in parallel, or a farm of
Celery workers); each job's record comes back here and is saved and
journaled at once, the same way whichever pool ran it.

One failed job is a row with its reason and the rest go on; a run stopped at
any point (Ctrl-C, a crash, a dead device) is finished later with
``resume_run``, which repeats only the jobs that have no ``ok`` result.
"""

from __future__ import annotations

import contextlib
import traceback
from pathlib import Path
from typing import Any, Protocol

from melt.config.loader import load_device, load_experiment, validate
from melt.config.specs import DeviceSpec, ExperimentSpec
from melt.errors import (ConfigError, MeltError, OutputTooLargeError, RunStopped, UnknownNameError,
                         UnsafePathError)
from melt.runner.device_worker import host_properties
from melt.runner.execute import Executor
from melt.runner.matrix import Job, expand
from melt.runner.models import ResolvedModel, resolve_model
from melt.runner.records import failed_record
from melt.store.runs import ResultsStore, Run, utc_now

__all__ = ["QuietEvents", "RunEvents", "Runner", "host_properties", "resume_run", "run_experiment"]


class RunEvents(Protocol):
    """What a user interface hears about a run (all optional to act on)."""

    def stage(self, message: str) -> None: ...
    def run_started(self, run_id: str, total: int, done: int) -> None: ...
    def job_started(self, job: Job, warmup: bool) -> None: ...
    def job_finished(self, job: Job, record: dict[str, Any]) -> None: ...


class QuietEvents:
    def stage(self, message: str) -> None:
        pass

    def run_started(self, run_id: str, total: int, done: int) -> None:
        pass

    def job_started(self, job: Job, warmup: bool) -> None:
        pass

    def job_finished(self, job: Job, record: dict[str, Any]) -> None:
        pass


class Runner:
    """Executes the jobs of one run through a pool and stores every record.

    The pool (:class:`~melt.runner.pool.LocalPool` by default, or the farm's)
    turns jobs into records; only this object writes the store, once per job
    id per execution, so a record delivered twice is stored once.
    """

    def __init__(
        self,
        run: Run,
        experiment: ExperimentSpec,
        base_dir: Path,
        *,
        events: RunEvents | None = None,
        executor: Executor | None = None,
        pool: Any = None,
    ):
        self.run = run
        self.experiment = experiment
        self.base_dir = base_dir
        self.events = events or QuietEvents()
        self.executor = executor
        self.pool = pool
        source = run.manifest.get("experiment_path") or "experiment"
        self.models: dict[str, ResolvedModel] = {
            m.name: resolve_model(m, base=base_dir, source=source, index=i)
            for i, m in enumerate(experiment.models)
        }
        _refuse_same_bytes(self.models, source)
        if pool is not None and getattr(pool, "remote", False):
            self.device_specs: dict[str, DeviceSpec] = {}  # the farm's workers hold them
        else:
            self.device_specs = {ref: load_device(ref, relative_to=base_dir) for ref in experiment.devices}
        self.jobs = expand(experiment, {n: m.sha256 for n, m in self.models.items()})

    def execute(self) -> Run:
        from melt.runner.pool import LocalPool, RunContext

        done = {jid for jid, e in self.run.journal().items() if e.get("status") == "ok"}
        todo = [j for j in self.jobs if j.job_id not in done]
        self.events.run_started(self.run.run_id, len(self.jobs), len(self.jobs) - len(todo))
        if hasattr(self.events, "plan"):
            per_device: dict[str, tuple[int, int]] = {}
            for job in self.jobs:
                total, finished = per_device.get(job.device, (0, 0))
                per_device[job.device] = (total + 1, finished + (job.job_id in done))
            self.events.plan(per_device)
        pool = self.pool or LocalPool()
        where = {"executor": pool.name}
        if getattr(pool, "description", None):
            where["executor_at"] = pool.description  # never a password
        self.run.manifest.pop("error", None)  # a resumed run's earlier stop is history
        self.run.update(status="running", total_jobs=len(self.jobs), **where)
        ctx = RunContext(self.run.run_id, self.experiment, self.models, self.device_specs, self.base_dir, self.events,
                         executor=self.executor, stored_record=self.run.job_record)
        stored: set[str] = set()
        try:
            with contextlib.closing(pool.results(todo, ctx)) as messages:
                for kind, payload in messages:
                    if kind == "staging":
                        self.run.update(staging=[*self.run.manifest.get("staging", []), payload])
                    elif kind == "record":
                        job, record = payload
                        if job.job_id in stored:  # delivered twice: recorded once
                            continue
                        stored.add(job.job_id)
                        record = self._save(job, record)
                        self.events.job_finished(job, record)
        except KeyboardInterrupt:
            self.run.update(status="interrupted")
            raise
        except Exception as exc:  # a crash of melt (or a lost farm): the run stays resumable
            raise self._stopped(exc) from exc
        finally:
            self._keep_restore_failures(ctx.restore_failed)
        statuses = [e.get("status") for e in self.run.journal().values()]
        complete = len(statuses) >= len(self.jobs)
        status = "complete" if complete and all(s == "ok" for s in statuses) else (
            "complete-with-failures" if complete else "incomplete")
        self.run.update(status=status, finished_at=utc_now())
        return self.run

    def _save(self, job: Job, record: dict[str, Any]) -> dict[str, Any]:
        """Store ``record`` as ``job``'s; one whose id or files the store refuses is stored as failed."""
        files = record.pop("_files", None) or {}
        try:
            if record.get("job_id") != job.job_id:
                raise UnsafePathError(f"the record names job {str(record.get('job_id'))[:80]!r}, "
                                      f"not {job.job_id}")
            self.run.save_job(record, files)
            return record
        except (UnsafePathError, OutputTooLargeError) as exc:
            failed = failed_record(job, f"its record was refused: {exc}")
            failed.pop("_files")
            self.run.save_job(failed)
            return failed

    def _keep_restore_failures(self, failed: dict[str, list[dict[str, Any]]]) -> None:
        """Store (and say) every device setting that could not be put back, with its by-hand fix."""
        if not failed:
            return
        at = utc_now()
        entries = [{"device": device, "at": at, **{k: r.get(k) for k in ("knob", "before", "error", "by_hand")}}
                   for device, reports in failed.items() for r in reports]
        for e in entries:
            fix = f"; to restore it by hand: {e['by_hand']}" if e.get("by_hand") else ""
            self.events.stage(f"warning: {e['device']}: {e['knob']} was not restored ({e['error']}){fix}")
        with contextlib.suppress(Exception):
            self.run.update(restore_failures=[*self.run.manifest.get("restore_failures", []), *entries])

    def _stopped(self, exc: Exception) -> RunStopped:
        """Mark the run resumable after ``exc``; keep the traceback beside it (a bug report's core)."""
        detail = None
        if not isinstance(exc, MeltError):
            path = self.run.dir / "melt-error.txt"
            with contextlib.suppress(OSError):
                path.write_text("".join(traceback.format_exception(exc)))
                detail = str(path)
        _mark_interrupted(self.run, exc)
        return RunStopped(self.run.run_id, exc, detail)


def _mark_interrupted(run: Run, exc: BaseException) -> None:
    """A run stopped by ``exc``: resumable, with the reason in its manifest (never raises)."""
    with contextlib.suppress(Exception):
        run.update(status="interrupted", error=f"{type(exc).__name__}: {exc}"[:500])


def run_experiment(path: str | Path, *, results_dir: Path, events: RunEvents | None = None,
                   executor: Executor | None = None, pool: Any = None) -> Run:
    """Run ``path`` into a new run folder under ``results_dir``; returns the run.

    ``pool`` runs the jobs (default: this host's devices in parallel); the
    farm's pool sends them to Celery workers instead.
    """
    path = Path(path)
    experiment = load_experiment(path)
    store = ResultsStore(results_dir)
    base = path.resolve().parent
    # Resolve everything that can fail on bad input before a run folder exists.
    remote = pool is not None and getattr(pool, "remote", False)
    _validate_refs(experiment, base, str(path), devices=not remote)
    if pool is not None and hasattr(pool, "check"):
        pool.check(experiment, str(path))
    run = store.create_run(experiment.model_dump(mode="json"), experiment_path=str(path.resolve()),
                           host=host_properties())
    try:  # fetching a catalogue model can still fail here: the run is then resumable, not "running"
        runner = Runner(run, experiment, base, events=events, executor=executor, pool=pool)
    except Exception as exc:
        _mark_interrupted(run, exc)
        raise
    return runner.execute()


def resume_run(run_ref: str, *, results_dir: Path, events: RunEvents | None = None,
               executor: Executor | None = None, pool: Any = None) -> Run:
    """Finish the jobs of an earlier run that have no ``ok`` result."""
    store = ResultsStore(results_dir)
    run = store.open_run(run_ref)
    source = run.manifest.get("experiment_path") or run.run_id
    experiment = validate(ExperimentSpec, run.manifest["experiment"], source)
    base = Path(source).parent if run.manifest.get("experiment_path") else Path.cwd()
    if pool is not None and hasattr(pool, "check"):
        pool.check(experiment, source)
    runner = Runner(run, experiment, base, events=events, executor=executor, pool=pool)
    return runner.execute()


def _refuse_same_bytes(models: dict[str, ResolvedModel], source: str) -> None:
    """Two names for one file's bytes would share job ids (a job is defined by the model's sha256)."""
    seen: dict[str, str] = {}
    for name, model in models.items():
        first = seen.setdefault(model.sha256, name)
        if first != name:
            raise ConfigError(source, [f"models: '{name}' has the same bytes as '{first}' "
                                       f"(sha256 {model.sha256[:12]}…); list a model once"])


def _validate_refs(experiment: ExperimentSpec, base: Path, source: str, *, devices: bool = True) -> None:
    """Fail early, before any run folder, on unknown devices, frameworks or missing models."""
    from melt.frameworks.registry import get_framework

    for i, ref in enumerate(experiment.devices if devices else []):
        try:
            load_device(ref, relative_to=base)
        except UnknownNameError as exc:
            raise ConfigError(source, [f"devices[{i}]: {exc}"]) from None
    for i, fw in enumerate(experiment.frameworks):
        try:
            get_framework(fw.name)
        except UnknownNameError as exc:
            raise ConfigError(source, [f"frameworks[{i}].name: {exc}"]) from None
        if fw.binaries and not (base / Path(fw.binaries).expanduser()).is_dir():
            raise ConfigError(source, [f"frameworks[{i}].binaries: folder not found: {fw.binaries}"])
    resolved: dict[str, ResolvedModel] = {}
    for i, m in enumerate(experiment.models):
        if m.path is not None:
            resolved[m.name] = resolve_model(m, base=base, source=source, index=i)
            _refuse_same_bytes(resolved, source)
        elif m.catalog is not None:  # the name only: fetching waits for the run
            from melt.models.catalog import lookup

            try:
                lookup(m.catalog)
            except UnknownNameError as exc:
                raise ConfigError(source, [f"models[{i}].catalog: {exc}"]) from None

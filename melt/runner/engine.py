"""Run an experiment: build, stage, execute every job, journal as we go.

One failed job is a row with its reason and the rest go on; a run stopped at
any point (Ctrl-C, a crash, a dead device) is finished later with
``resume_run``, which repeats only the jobs that have no ``ok`` result.
"""

from __future__ import annotations

import dataclasses
import platform
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from melt import __version__
from melt.config.loader import load_device, load_experiment, validate
from melt.config.specs import DeviceSpec, ExperimentSpec
from melt.devices.base import Device
from melt.devices.registry import open_device
from melt.errors import BuildError, ConfigError, JobFailed, MeltError, TransportError, UnknownNameError
from melt.runner.execute import Executor, PlainExecutor
from melt.runner.matrix import Job, expand
from melt.runner.models import ResolvedModel, resolve_model
from melt.store.paths import cache_dir
from melt.store.runs import ResultsStore, Run, utc_now


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


def host_properties() -> dict[str, Any]:
    u = platform.uname()
    return {"hostname": u.node, "os": f"{u.system} {u.release}", "machine": u.machine,
            "python": platform.python_version(), "melt_version": __version__}


@dataclass
class Prepared:
    """A device with a framework built and staged on it."""

    device: Device
    framework: Any  # melt.frameworks.base.Framework
    bin_dir: str
    build_provenance: dict[str, Any]
    models: dict[str, str]  # model name -> path on the device
    state: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # device state applied
    emulated: bool = False  # its code runs under an instruction-set emulator (qemu-user)


class Runner:
    """Executes the jobs of one run."""

    def __init__(
        self,
        run: Run,
        experiment: ExperimentSpec,
        base_dir: Path,
        *,
        events: RunEvents | None = None,
        executor: Executor | None = None,
    ):
        self.run = run
        self.experiment = experiment
        self.base_dir = base_dir
        self.events = events or QuietEvents()
        self.executor = executor
        self._telemetry: Executor | None = None
        source = run.manifest.get("experiment_path") or "experiment"
        self.models: dict[str, ResolvedModel] = {
            m.name: resolve_model(m, base=base_dir, source=source, index=i)
            for i, m in enumerate(experiment.models)
        }
        self.device_specs: dict[str, DeviceSpec] = {
            ref: load_device(ref, relative_to=base_dir) for ref in experiment.devices
        }
        self.jobs = expand(experiment, {n: m.sha256 for n, m in self.models.items()})

    # ------------------------------------------------------------------ driving

    def execute(self) -> Run:
        done = {jid for jid, e in self.run.journal().items() if e.get("status") == "ok"}
        todo = [j for j in self.jobs if j.job_id not in done]
        self.events.run_started(self.run.run_id, len(self.jobs), len(self.jobs) - len(todo))
        self.run.update(status="running", total_jobs=len(self.jobs))
        try:
            groups: dict[tuple, list[Job]] = {}
            for job in todo:
                groups.setdefault((job.device, job.framework), []).append(job)
            for (device_ref, fw_ref), jobs in groups.items():
                self._run_group(device_ref, fw_ref, jobs)
        except KeyboardInterrupt:
            self.run.update(status="interrupted")
            raise
        statuses = [e.get("status") for e in self.run.journal().values()]
        complete = len(statuses) >= len(self.jobs)
        status = "complete" if complete and all(s == "ok" for s in statuses) else (
            "complete-with-failures" if complete else "incomplete")
        self.run.update(status=status, finished_at=utc_now())
        return self.run

    def _executor_for(self, spec: DeviceSpec) -> Executor:
        """The given executor, else telemetry where the device config enables it."""
        if self.executor is not None:
            return self.executor
        if spec.telemetry.enabled:
            if self._telemetry is None:
                from melt.runner.telemetry_executor import TelemetryExecutor

                self._telemetry = TelemetryExecutor()
            return self._telemetry
        return PlainExecutor()

    def _run_group(self, device_ref: str, fw_ref: Any, jobs: list[Job]) -> None:
        from melt.devices.state import DeviceState, restore_journal

        spec = self.device_specs[device_ref]
        try:
            prepared = self._prepare(spec, fw_ref, jobs)
        except MeltError as exc:
            for job in jobs:
                self._save(job, spec, status="failed", reason=str(exc))
            return
        journal = cache_dir() / "state" / f"{spec.name}.json"
        try:
            restore_journal(prepared.device.transport, journal)  # left changed by a killed melt
            with DeviceState(prepared.device.transport, spec.state, journal=journal) as state:
                prepared.state = state.as_dict()
                self._run_jobs(prepared, spec, jobs)
        except TransportError as exc:  # the device went away while setting or restoring state
            journaled = self.run.journal()
            for job in jobs:
                if job.job_id not in journaled:
                    self._save(job, spec, status="failed", reason=f"device {spec.name} unavailable: {exc}")
        finally:
            prepared.device.close()

    def _run_jobs(self, prepared: Prepared, spec: DeviceSpec, jobs: list[Job]) -> None:
        executor = self._executor_for(spec)
        seen_cells: set[str] = set()
        device_error: str | None = None
        for i, job in enumerate(jobs):
            if device_error:
                self._save(job, spec, status="failed", reason=device_error)
                continue
            if job.cell_id not in seen_cells:
                seen_cells.add(job.cell_id)
                for _ in range(self.experiment.warmup):
                    self.events.job_started(job, True)
                    try:  # warm-ups skip telemetry, cool-down and the idle baseline
                        self._measure(prepared, job, PlainExecutor())
                    except MeltError:  # the counted run will say what is wrong
                        break
            try:
                record = self._run_job(prepared, spec, job, executor)
            except TransportError as exc:
                reason = f"device {spec.name} unavailable: {exc}"
                self._save(job, spec, status="failed", reason=reason)
                if not _reconnected(prepared.device):  # the others go on once it is back
                    device_error = reason
                continue
            self.events.job_finished(job, record)
            last_of_cell = i == len(jobs) - 1 or jobs[i + 1].cell_id != job.cell_id
            if last_of_cell and self.experiment.adaptive is not None:
                try:
                    self._adapt(prepared, spec, job, executor)
                except TransportError as exc:
                    device_error = f"device {spec.name} unavailable: {exc}"

    def _adapt(self, prepared: Prepared, spec: DeviceSpec, job: Job, executor: Executor) -> None:
        """Add repetitions to ``job``'s cell while its confidence interval is too wide."""
        from melt.telemetry.repeat import needs_more

        rule = self.experiment.adaptive
        assert rule is not None
        # the cell's records so far (this run and, on resume, earlier attempts): at most max_repetitions
        ids = (dataclasses.replace(job, repetition=rep).job_id for rep in range(rule.max_repetitions))
        cell = [r for r in map(self.run.job_record, ids) if r is not None]
        values = [j["metrics"][rule.metric] for j in cell
                  if j["status"] == "ok" and isinstance(j["metrics"].get(rule.metric), (int, float))]
        repetition = max((j["repetition"] for j in cell), default=job.repetition)
        while values and needs_more(values, rel_half_width=rule.rel_half_width,
                                    min_n=self.experiment.repetitions, max_n=rule.max_repetitions):
            repetition += 1
            extra = dataclasses.replace(job, repetition=repetition)
            record = self._run_job(prepared, spec, extra, executor)
            self.events.job_finished(extra, record)
            value = record["metrics"].get(rule.metric)
            if record["status"] != "ok" or not isinstance(value, (int, float)):
                break
            values.append(value)

    # ---------------------------------------------------------------- one job

    def _prepare(self, spec: DeviceSpec, fw_ref: Any, jobs: list[Job]) -> Prepared:
        from melt.devices.abi import check_binaries
        from melt.frameworks.registry import get_framework

        framework = get_framework(fw_ref.name)
        self.events.stage(f"connecting to {spec.name}")
        device = open_device(spec)
        if hasattr(device, "on_push") and hasattr(self.events, "transfer"):
            device.on_push = self.events.transfer
        try:
            abi = device.abi()
            if fw_ref.binaries:
                folder = Path(fw_ref.binaries).expanduser()
                build = framework.prebuilt(folder if folder.is_absolute() else self.base_dir / folder)
                label = f"prebuilt ({build.bin_dir})"
            else:
                profile = fw_ref.profile or spec.build_profile
                if profile == "auto":  # as for a real device: by its kind and CPU ABI
                    pick = getattr(framework, "auto_profile", None)
                    profile = pick(spec.kind, abi) if pick else "host"
                self.events.stage(f"building {framework.name} ({profile})")
                build = framework.build(profile, source=fw_ref.source)
                label = f"'{profile}'"
            kinds = sorted({j.kind for j in jobs})
            names = sorted({b for k in kinds for b in framework.binaries_for(k)})
            missing = [n for n in names if n not in build.binaries]
            if missing:
                raise BuildError(f"{framework.name}: no {', '.join(missing)} in {build.bin_dir}")
            if abi:  # refuse code the device cannot run before pushing anything
                check_binaries({n: build.binaries[n] for n in names}, abi, device=spec.name, build=label)
            self.events.stage(f"staging binaries and models on {spec.name}")
            key = Path(build.dir).name
            staged = [device.stage(build.binaries[n], category=f"bin/{key}") for n in names]
            bin_dir = str(Path(staged[0]).parent) if staged else str(build.bin_dir)
            models = {
                name: device.stage(self.models[name].path, category="models")
                for name in sorted({j.model.name for j in jobs})
            }
        except BaseException:
            device.close()
            raise
        pushed = getattr(device, "bytes_pushed", 0)
        self.run.update(staging=[*self.run.manifest.get("staging", []), {
            "device": spec.name, "framework": framework.name, "bytes_pushed": pushed, "at": utc_now()}])
        emulated = bool(device.properties().get("emulated"))
        return Prepared(device, framework, bin_dir, dict(build.provenance), models, emulated=emulated)

    def _measure(self, prepared: Prepared, job: Job, executor: Executor):
        """Run ``job`` once; returns (what ran, as a command line; the execution)."""
        kw = {"bin_dir": prepared.bin_dir, "model_path": prepared.models[job.model.name]}
        cap = self.experiment.timeout_s
        if isinstance(executor, PlainExecutor) or not hasattr(prepared.framework, "phased_invocations"):
            inv = prepared.framework.invocation(job.kind, job.params, **kw)
            inv = dataclasses.replace(inv, timeout_s=min(inv.timeout_s, cap))
            return shlex.join(inv.argv), dict(inv.env), executor.execute(prepared.device, inv)
        steps = [(phase, dataclasses.replace(inv, timeout_s=min(inv.timeout_s, cap)))
                 for phase, inv in prepared.framework.phased_invocations(job.kind, job.params, **kw)]
        command = " ; ".join(shlex.join(inv.argv) for _, inv in steps)
        what = steps[0][1] if [p for p, _ in steps] == ["run"] else steps
        return command, dict(steps[0][1].env), executor.execute(prepared.device, what)

    def _run_job(self, prepared: Prepared, spec: DeviceSpec, job: Job, executor: Executor) -> dict[str, Any]:
        """Measure one job (again while it throttled, up to ``rerun_throttled`` times) and save it."""
        for attempt in range(self.experiment.rerun_throttled + 1):
            record = self._attempt(prepared, spec, job, executor, attempt)
            if not (record["metrics"].get("throttled") and attempt < self.experiment.rerun_throttled):
                break
        self.run.save_job(record, record.pop("_files"))
        return record

    def _attempt(self, prepared: Prepared, spec: DeviceSpec, job: Job, executor: Executor,
                 attempt: int) -> dict[str, Any]:
        self.events.job_started(job, False)
        started = utc_now()
        provenance: dict[str, Any] = {
            "melt_version": __version__,
            "framework_build": prepared.build_provenance,
            "device": prepared.device.properties(),
            "model": self.models[job.model.name].provenance(),
            "host": host_properties(),
            "device_state": prepared.state,
            "attempt": attempt,
        }
        extra: dict[str, Any] = {}
        files: dict[str, bytes] = {}
        metrics: dict[str, Any] = {}
        status, reason = "ok", None
        try:
            command, env, execution = self._measure(prepared, job, executor)
            provenance["command"], provenance["env"] = command, env
            for key in ("phases", "throttled_intervals", "metrics_missing", "turns",
                        "conversation_totals", "series"):
                if key in execution.provenance:
                    extra[key] = execution.provenance.pop(key)
            provenance.update(execution.provenance)
            files = {"stdout.txt": execution.stdout.encode(), "stderr.txt": execution.stderr.encode(),
                     **execution.files}
            metrics = dict(prepared.framework.parse_metrics(
                job.kind, job.params, execution.stdout, execution.stderr, execution.returncode))
            # the framework's own numbers win: telemetry only adds what it cannot see
            metrics.update({k: v for k, v in execution.metrics.items() if k not in metrics})
            metrics.setdefault("wall_s", round(execution.duration_s, 6))
        except JobFailed as exc:
            status, reason = "failed", exc.reason
        except TransportError:
            raise
        except MeltError as exc:
            status, reason = "failed", str(exc)
        record = self._record(job, spec, status=status, reason=reason, metrics=metrics,
                              provenance=provenance, started=started, emulated=prepared.emulated)
        record.update(extra)
        record["_files"] = files
        return record

    def _record(self, job: Job, spec: DeviceSpec, *, status: str, reason: str | None,
                metrics: dict | None = None, provenance: dict | None = None,
                started: str | None = None, emulated: bool = False) -> dict[str, Any]:
        return {
            "job_id": job.job_id,
            "cell_id": job.cell_id,
            "status": status,
            "reason": reason,
            "device": job.device,
            "framework": job.framework.name,
            "model": job.model.name,
            "workload": job.workload,
            "kind": job.kind,
            "params": job.params,
            "repetition": job.repetition,
            "simulated": spec.simulated,
            "emulated": emulated,
            "started_at": started or utc_now(),
            "finished_at": utc_now(),
            "metrics": metrics or {},
            "provenance": provenance or {"model": self.models[job.model.name].provenance()},
        }

    def _save(self, job: Job, spec: DeviceSpec, *, status: str, reason: str) -> dict[str, Any]:
        """Store a job that could not run at all."""
        record = self._record(job, spec, status=status, reason=reason)
        self.run.save_job(record)
        self.events.job_finished(job, record)
        return record


def _reconnected(device: Any) -> bool:
    """Whether a device that dropped off answers again (devices that can reconnect try)."""
    reconnect = getattr(device, "reconnect", None)
    if not callable(reconnect):
        return False
    try:
        reconnect()
        return True
    except TransportError:
        return False


def run_experiment(path: str | Path, *, results_dir: Path, events: RunEvents | None = None,
                   executor: Executor | None = None) -> Run:
    """Run ``path`` into a new run folder under ``results_dir``; returns the run."""
    path = Path(path)
    experiment = load_experiment(path)
    store = ResultsStore(results_dir)
    base = path.resolve().parent
    # Resolve everything that can fail on bad input before a run folder exists.
    _validate_refs(experiment, base, str(path))
    run = store.create_run(experiment.model_dump(mode="json"), experiment_path=str(path.resolve()),
                           host=host_properties())
    runner = Runner(run, experiment, base, events=events, executor=executor)
    return runner.execute()


def resume_run(run_ref: str, *, results_dir: Path, events: RunEvents | None = None,
               executor: Executor | None = None) -> Run:
    """Finish the jobs of an earlier run that have no ``ok`` result."""
    store = ResultsStore(results_dir)
    run = store.open_run(run_ref)
    source = run.manifest.get("experiment_path") or run.run_id
    experiment = validate(ExperimentSpec, run.manifest["experiment"], source)
    base = Path(source).parent if run.manifest.get("experiment_path") else Path.cwd()
    runner = Runner(run, experiment, base, events=events, executor=executor)
    return runner.execute()


def _validate_refs(experiment: ExperimentSpec, base: Path, source: str) -> None:
    """Fail early, before any run folder, on unknown devices, frameworks or missing models."""
    from melt.frameworks.registry import get_framework

    for i, ref in enumerate(experiment.devices):
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
    for i, m in enumerate(experiment.models):
        if m.path is not None:
            resolve_model(m, base=base, source=source, index=i)
        elif m.catalog is not None:  # the name only: fetching waits for the run
            from melt.models.catalog import lookup

            try:
                lookup(m.catalog)
            except UnknownNameError as exc:
                raise ConfigError(source, [f"models[{i}].catalog: {exc}"]) from None

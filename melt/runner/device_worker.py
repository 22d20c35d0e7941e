"""One device's worker: ``DeviceWorker(...).execute(job) -> record``.

This is the function every executor calls, the local one (a thread per
device) and the farm's Celery task alike, so a job means the same thing
wherever it runs. A worker opens its device once, applies the device state
its config asks for (restored by :meth:`DeviceWorker.close`), builds and
stages each framework on first use (builds shared through a
:class:`BuildCache`, so two devices wanting the same build wait for one),
runs the warm-ups of a cell before its first measured job, and returns the
job's record with its files under ``"_files"``. It stores nothing itself:
the caller saves the record.

A failure becomes a failed record with its reason; only a device that went
away (``TransportError``) also marks the worker ``broken``, and every later
job on it fails fast with the same reason.
"""

from __future__ import annotations

import contextlib
import dataclasses
import platform
import shlex
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

from melt import __version__
from melt.config.specs import DeviceSpec, ExperimentSpec
from melt.devices.base import Device
from melt.errors import BuildError, JobFailed, MeltError, TransportError
from melt.runner.execute import Executor, PlainExecutor
from melt.runner.matrix import Job
from melt.runner.models import ResolvedModel
from melt.store.runs import utc_now


class JobEvents(Protocol):
    """What a worker tells a user interface (called from the worker's thread)."""

    def stage(self, message: str) -> None: ...
    def job_started(self, job: Job, warmup: bool) -> None: ...


class _Quiet:
    def stage(self, message: str) -> None:
        pass

    def job_started(self, job: Job, warmup: bool) -> None:
        pass


def host_properties() -> dict[str, Any]:
    u = platform.uname()
    return {"hostname": u.node, "os": f"{u.system} {u.release}", "machine": u.machine,
            "python": platform.python_version(), "melt_version": __version__}


class BuildCache:
    """Framework builds shared by the workers of one process: each built once.

    The build itself is cached on disk across processes; this keeps two
    threads from building (or checking) the same key at the same time.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[tuple, tuple[threading.Lock, list]] = {}

    def get(self, key: tuple, make: Callable[[], Any]) -> Any:
        with self._lock:
            lock, slot = self._entries.setdefault(key, (threading.Lock(), []))
        with lock:
            if not slot:
                slot.append(make())
            return slot[0]


@dataclass
class Prepared:
    """A framework built and staged on the worker's device."""

    framework: Any  # melt.frameworks.base.Framework
    bin_dir: str
    build_provenance: dict[str, Any]
    models: dict[str, str]  # model name -> path on the device
    emulated: bool = False  # its code runs under an instruction-set emulator (qemu-user)


class DeviceWorker:
    """Runs jobs on one device, one at a time (see the module doc).

    ``on_staging(info)`` hears what each staging pushed (bytes), for the run
    manifest. ``executor`` overrides the per-device choice (telemetry where
    the device config enables it, else plain).
    """

    def __init__(self, spec: DeviceSpec, experiment: ExperimentSpec, models: dict[str, ResolvedModel],
                 base_dir: Path, *, builds: BuildCache | None = None, events: JobEvents | None = None,
                 executor: Executor | None = None,
                 on_staging: Callable[[dict[str, Any]], None] | None = None):
        self.spec = spec
        self.experiment = experiment
        self.models = models
        self.base_dir = base_dir
        self.builds = builds or BuildCache()
        self.events = events or _Quiet()
        self.on_staging = on_staging
        self._executor = executor
        self._device: Device | None = None
        self._state: Any = None  # DeviceState, entered
        self._state_dict: list[dict[str, Any]] = []
        self._prepared: dict[tuple, Prepared | MeltError] = {}
        self._warm: set[str] = set()
        self.broken: str | None = None  # why the device is unusable, once it went away
        #: settings melt changed and could not put back (KnobReport dicts, with ``by_hand``)
        self.restore_failures: list[dict[str, Any]] = []

    # ---------------------------------------------------------------- the seam

    def execute(self, job: Job) -> dict[str, Any]:
        """Run ``job`` (warm-ups first for a new cell) and return its record.

        The record carries its files (raw output, traces) under ``"_files"``.
        Never raises for a job's failure: that is a failed record.
        """
        if self.broken:
            return self.failed_record(job, self.broken)
        try:
            prepared = self._prepare(job)
            if isinstance(prepared, MeltError):
                return self.failed_record(job, str(prepared))
            executor = self._executor_for()
            if job.cell_id not in self._warm:
                self._warm.add(job.cell_id)
                for _ in range(self.experiment.warmup):
                    self.events.job_started(job, True)
                    try:  # warm-ups skip telemetry, cool-down and the idle baseline
                        self._measure(prepared, job, PlainExecutor())
                    except TransportError:
                        raise
                    except MeltError:  # the counted run will say what is wrong
                        break
            for attempt in range(self.experiment.rerun_throttled + 1):
                record = self._attempt(prepared, job, executor, attempt)
                if not (record["metrics"].get("throttled") and attempt < self.experiment.rerun_throttled):
                    break
            return record
        except TransportError as exc:
            reason = f"device {self.spec.name} unavailable: {exc}"
            if not self._reconnected():  # the next jobs go on once it is back
                self.broken = reason
                self._drop_device()
            return self.failed_record(job, reason)
        except Exception as exc:  # noqa: BLE001 - a bug in melt fails this job, not the run
            record = self.failed_record(job, f"internal error in melt: {type(exc).__name__}: {exc}")
            record["_files"] = {"melt-traceback.txt": traceback.format_exc().encode()}
            return record

    def failed_record(self, job: Job, reason: str) -> dict[str, Any]:
        """The record of a job that could not run at all."""
        record = self._record(job, status="failed", reason=reason)
        record["_files"] = {}
        return record

    def close(self) -> None:
        """Restore the device state and release the device.

        Errors are not raised: a setting that could not be put back is added
        to :attr:`restore_failures`, with the command that restores it by hand.
        """
        state, self._state = self._state, None
        if state is not None:
            with contextlib.suppress(Exception):
                state.__exit__(None, None, None)
            self.restore_failures += [dataclasses.asdict(r) for r in state.failed_restores()]
        if self._device is not None:
            with contextlib.suppress(Exception):
                self._device.close()
            self._device = None

    def __enter__(self) -> "DeviceWorker":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---------------------------------------------------------------- preparing

    def _executor_for(self) -> Executor:
        if self._executor is None:
            if self.spec.kind == "ios":  # no shell: melt's app runs the job, measured as iOS allows
                from melt.runner.ios_executor import IosExecutor

                self._executor = IosExecutor()
            elif self.spec.telemetry.enabled:
                from melt.runner.telemetry_executor import TelemetryExecutor

                self._executor = TelemetryExecutor()
            else:
                self._executor = PlainExecutor()
        return self._executor

    def _open(self) -> Device:
        """The device, opened and in the state its config asks for."""
        if self._device is None:
            from melt.devices.registry import open_device
            from melt.devices.state import DeviceState, restore_journal
            from melt.store.paths import cache_dir

            self.events.stage(f"connecting to {self.spec.name}")
            device = open_device(self.spec)
            if hasattr(device, "on_push") and hasattr(self.events, "transfer"):
                device.on_push = self.events.transfer  # type: ignore[attr-defined]
            journal = cache_dir() / "state" / f"{self.spec.name}.json"
            try:
                for rep in restore_journal(device.transport, journal):  # left by a killed melt
                    if rep.error and not rep.restored:
                        self.events.stage(f"warning: {self.spec.name}: {rep.knob}: {rep.error}")
                        self.restore_failures.append(dataclasses.asdict(rep))
                state = DeviceState(device.transport, self.spec.state, journal=journal)
                state.__enter__()
            except BaseException:
                device.close()
                raise
            self._device, self._state = device, state
            self._state_dict = state.as_dict()
            for rep in state.reports:
                if rep.warning:  # e.g. a charger nothing on the device can cut
                    self.events.stage(f"warning: {self.spec.name}: {rep.warning}")
        return self._device

    def _reconnected(self) -> bool:
        """Whether a device that dropped off answers again (devices that can reconnect try)."""
        reconnect = getattr(self._device, "reconnect", None)
        if not callable(reconnect):
            return False
        try:
            reconnect()
            return True
        except TransportError:
            return False

    def _drop_device(self) -> None:
        self.close()
        self._prepared.clear()

    def _prepare(self, job: Job) -> Prepared | MeltError:
        """Build and stage ``job``'s framework and model (once per framework and model)."""
        fw_ref = job.framework
        key = (fw_ref.name, fw_ref.source, fw_ref.profile, fw_ref.binaries)
        cached = self._prepared.get(key)
        if isinstance(cached, MeltError):
            return cached
        try:
            if self.spec.kind == "endpoint":  # a remote server: nothing to build or stage
                from melt.runner.endpoint_executor import prepared_for

                cached = self._prepared[key] = cached or prepared_for(self._open(), fw_ref.name)
                return cached
            if cached is None:
                cached = self._prepared[key] = self._build_and_stage(fw_ref, job)
            if job.model.name not in cached.models:
                device = self._open()
                cached.models[job.model.name] = device.stage(self.models[job.model.name].path,
                                                             category="models")
            return cached
        except TransportError:
            raise
        except MeltError as exc:
            self._prepared[key] = exc
            return exc

    def _build(self, framework: Any, fw_ref: Any, abi: str | None, names: list[str]) -> tuple[Any, str]:
        """(build, label): prebuilt binaries, or the build for the device's profile holding ``names``."""
        if fw_ref.binaries:
            folder = Path(fw_ref.binaries).expanduser()
            folder = folder if folder.is_absolute() else self.base_dir / folder
            build = self.builds.get(("prebuilt", fw_ref.name, str(folder)), lambda: framework.prebuilt(folder))
            return build, f"prebuilt ({build.bin_dir})"
        profile = fw_ref.profile or self.spec.build_profile
        if self.spec.build_on == "device":  # compiled on the board itself, over SSH: its binaries stay there
            from melt.frameworks.llamacpp.board_build import build_on_board, check_board_framework

            check_board_framework(framework.name)
            device, label = self._open(), f"{framework.name} ({profile}) on {self.spec.name}"
            show = getattr(self.events, "build_output", None)

            def on_board() -> Any:
                self.events.stage(f"building {label}")
                return build_on_board(device, profile, source=fw_ref.source, targets=names,
                                      on_output=(lambda line: show(label, line)) if show else None)

            key = ("board", self.spec.name, fw_ref.name, fw_ref.source, profile, tuple(names))
            return self.builds.get(key, on_board), f"'{profile}' on {self.spec.name}"
        if profile == "auto":  # as for a real device: by its kind and CPU ABI
            pick = getattr(framework, "auto_profile", None)
            profile = pick(self.spec.kind, abi) if pick else "host"
        follow = getattr(framework, "device_profile", None)  # a build that follows the device (MLC's stand-in)
        if follow is not None:
            profile = follow(profile, self.spec.kind, abi, self.spec.build_profile)

        def make() -> Any:
            self.events.stage(f"building {framework.name} ({profile})")
            show = getattr(self.events, "build_output", None)  # a display that reads the build's lines
            label = f"{framework.name} ({profile})"
            on_output = (lambda line: show(label, line)) if show else None
            return framework.build(profile, source=fw_ref.source, targets=names, on_output=on_output)

        key = ("build", fw_ref.name, fw_ref.source, profile, tuple(names))
        return self.builds.get(key, make), f"'{profile}'"

    def _build_and_stage(self, fw_ref: Any, job: Job) -> Prepared:
        from melt.devices.abi import check_binaries

        from melt.frameworks.registry import get_framework

        device = self._open()
        framework = get_framework(fw_ref.name)
        prepare_app = getattr(device, "prepare_app", None)
        if prepare_app is not None:  # the framework lives in the device's app (an iPhone): nothing to build
            app = prepare_app()
            models = {job.model.name: device.stage(self.models[job.model.name].path, category="models")}
            return Prepared(framework, "", {"framework": framework.name, **app}, models)
        abi = device.abi()
        kinds = sorted({w.kind for w in self.experiment.workloads})
        build, label = self._build(framework, fw_ref, abi,
                                   sorted({b for k in kinds for b in framework.binaries_for(k)}))
        # asked again: a build may bring companions its kinds run beside it (MLC's stand-in)
        names = sorted({b for k in kinds for b in framework.binaries_for(k)})
        missing = [n for n in names if n not in build.binaries]
        if missing:
            raise BuildError(f"{framework.name}: no {', '.join(missing)} in {build.bin_dir}")
        on_board = build.provenance.get("built_on") == "device"  # built there: nothing to check or push
        if abi and not on_board:  # refuse code the device cannot run before pushing anything
            check_binaries({n: build.binaries[n] for n in names}, abi, device=self.spec.name, build=label)
        self.events.stage(f"staging binaries and models on {self.spec.name}")
        key = Path(build.dir).name
        before = getattr(device, "bytes_pushed", 0)
        staged = [] if on_board else [device.stage(build.binaries[n], category=f"bin/{key}") for n in names]
        bin_dir = str(Path(staged[0]).parent) if staged else str(build.bin_dir)
        models = {job.model.name: device.stage(self.models[job.model.name].path, category="models")}
        if self.on_staging is not None:
            self.on_staging({"device": self.spec.name, "framework": framework.name,
                             "bytes_pushed": getattr(device, "bytes_pushed", 0) - before, "at": utc_now()})
        emulated = bool(device.properties().get("emulated"))
        return Prepared(framework, bin_dir, dict(build.provenance), models, emulated=emulated)

    # ---------------------------------------------------------------- one job

    def _measure(self, prepared: Prepared, job: Job, executor: Executor):
        """Run ``job`` once; returns (what ran, as a command line; its env; the execution)."""
        device = self._open()
        if self.spec.kind == "endpoint":  # the streamed exchange against the remote server
            from melt.runner.endpoint_executor import EndpointExecutor

            return EndpointExecutor().measure(device, prepared.framework, job)
        kw: dict[str, Any] = {"bin_dir": prepared.bin_dir, "model_path": prepared.models[job.model.name]}
        inputs = self._stage_inputs(prepared, job)
        if inputs:
            kw["inputs"] = inputs
        cap = self.experiment.timeout_s
        if isinstance(executor, PlainExecutor) or not hasattr(prepared.framework, "phased_invocations"):
            inv = prepared.framework.invocation(job.kind, job.params, **kw)
            inv = dataclasses.replace(inv, timeout_s=min(inv.timeout_s, cap))
            return shlex.join(inv.argv), dict(inv.env), executor.execute(device, inv)
        steps = [(phase, dataclasses.replace(inv, timeout_s=min(inv.timeout_s, cap)))
                 for phase, inv in prepared.framework.phased_invocations(job.kind, job.params, **kw)]
        command = " ; ".join(shlex.join(inv.argv) for _, inv in steps)
        what = steps[0][1] if [p for p, _ in steps] == ["run"] else steps
        return command, dict(steps[0][1].env), executor.execute(device, what)

    def _reference_provenance(self, job: Job) -> dict[str, Any] | None:
        """What a job's quality figures were measured against, and whether that is the original weights."""
        ref = job.params.get("reference")
        source = self.models.get(job.model.name if ref == "host" else ref) if isinstance(ref, str) else None
        if source is None:
            return None
        ftype = source.facts.file_type if source.facts else None
        out: dict[str, Any] = {"reference": ref, "model": source.ref.name, "sha256": source.sha256,
                               "file_type": ftype, "logits_from": "this host's llama.cpp build"}
        from melt.frameworks.llamacpp.quality import other_tokenizer

        apart = other_tokenizer(Path(self.models[job.model.name].path), Path(source.path))
        if apart:
            out["note"] = apart
        elif ftype and ftype not in ("F32", "F16", "BF16"):
            made = (self.models[job.model.name].extra or {}).get("requantized_from")
            out["note"] = (f"requantized from {made}; " if made else "") + \
                f"the reference ({ftype}) is not the original weights"
        return out

    def _stage_inputs(self, prepared: Prepared, job: Job) -> dict[str, str]:
        """Stage the files a job needs besides binaries and model (a quality job's text or
        reference logits), content-addressed like models; their device paths by role."""
        wanted = getattr(prepared.framework, "job_inputs", None)
        if wanted is None:
            return {}
        files = wanted(job.kind, job.params, model_file=Path(self.models[job.model.name].path),
                       model_files={name: Path(m.path) for name, m in self.models.items()},
                       base_dir=self.base_dir, say=self.events.stage)
        if not files:
            return {}
        device = self._open()
        return {role: device.stage(Path(path), category="inputs") for role, path in files.items()}

    def _attempt(self, prepared: Prepared, job: Job, executor: Executor, attempt: int) -> dict[str, Any]:
        self.events.job_started(job, False)
        started = utc_now()
        device = self._open()
        provenance: dict[str, Any] = {
            "melt_version": __version__,
            "framework_build": prepared.build_provenance,
            "device": device.properties(),
            "model": self.models[job.model.name].provenance(),
            "host": host_properties(),
            "device_state": self._state_dict,
            "attempt": attempt,
        }
        reference = self._reference_provenance(job)
        if reference:
            provenance["quality_reference"] = reference
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
        record = self._record(job, status=status, reason=reason, metrics=metrics,
                              provenance=provenance, started=started, emulated=prepared.emulated)
        # the device itself says so too (a virtual phone's ro.melt.virtual), not only its config
        record["simulated"] = bool(record["simulated"] or (provenance.get("device") or {}).get("simulated"))
        if prepared.build_provenance.get("stand_in"):  # a stand-in framework's numbers are not its own
            record["stand_in"] = True  # and on a real phone they are measured: simulated stays as the device says
        record.update(extra)
        record["_files"] = files
        return record

    def _record(self, job: Job, *, status: str, reason: str | None, metrics: dict | None = None,
                provenance: dict | None = None, started: str | None = None,
                emulated: bool = False) -> dict[str, Any]:
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
            "simulated": self.spec.simulated,
            "emulated": emulated,
            "started_at": started or utc_now(),
            "finished_at": utc_now(),
            "metrics": metrics or {},
            "provenance": provenance or ({"model": self.models[job.model.name].provenance()}
                                         if job.model.name in self.models else {}),
        }

"""Run one job under the on-device runner and bring its files back.

A :class:`TelemetrySession` belongs to one open device. On first use it
stages ``runner.sh`` (content-addressed, so once per device), picks the shell
that runs it (one with ``$EPOCHREALTIME`` when the device has one: mksh on
Android, bash elsewhere) and asks the device which sensors it has. Each
:meth:`TelemetrySession.run` writes a small ``job.sh`` with the steps (every
argument quoted with :func:`shlex.quote`) and runs the runner in the same
blocking shell call (nothing crosses the transport while the model runs); the
runner packs its files (and, on a virtual device, its slice of the truth log)
into one tar, which is pulled; a last call deletes the job from the device.

If the call is interrupted (Ctrl-C, a timeout, any error) the runner is sent
SIGTERM through its pid file: it stops the inference process and the sampler.
"""

from __future__ import annotations

import math
import os
import shlex
import tarfile
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from melt.config.specs import TelemetrySpec
from melt.devices.base import Device
from melt.errors import CommandTimeout, OutputTooLargeError, TransportError, UnsafePathError
from melt.store.paths import confined
from melt.telemetry.channels import ChannelPlan, discover_channels
from melt.telemetry.clock import ClockOffset, measure_offset, parse_device_time
from melt.telemetry.phases import StepResult
from melt.telemetry.trace import Trace, parse_samples

RUNNER = Path(__file__).with_name("runner.sh")
#: the virtual phone's truth log (see melt/virtual/simulator.py), on the device
TRUTH_LOG = "/data/melt-virtual/truth.csv"
_TRUTH_TIME_COLUMN = {"realtime": 3, "uptime": 1}  # realtime_s, boottime_s (1-based, for awk)
ODPM_GLOB = "/sys/bus/iio/devices/iio:device*/energy_value"


@dataclass(frozen=True)
class Step:
    """One process of a job: ``phase`` is ``run`` or the phase it measures."""

    phase: str
    argv: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    timeout_s: float = 600.0


@dataclass
class JobOutput:
    """What a job left on the device, parsed."""

    steps: list[StepResult]
    trace: Trace
    markdata: str = ""
    aux: str = ""
    truth: tuple[np.ndarray, np.ndarray] | None = None
    duration_s: float = 0.0
    remote_dir: str = ""
    step_specs: list[Step] = field(default_factory=list)
    client: Any = None  # what a host-side client (``during``) returned
    markfiles: str = ""  # battery status and chargers online at each mark
    after: str | None = None  # output of the ``after`` script, when one ran


#: Runner files that stay on the device (inputs and control files).
_NOT_PULLED = ("job.sh", "tick", "stop", "pid")
#: The most melt reads of one file the job runner leaves (samples, outputs): hours of 50 Hz samples.
MAX_JOB_FILE_BYTES = 256 * 1024 * 1024
#: A job.sh up to this long travels inside the shell command: far below the adb server's
#: request limit (64 KB) and the 256 KB-1 MB payload of adbd since Android 7 (4 KB before).
_INLINE_SCRIPT_MAX = 16_000


class TelemetrySession:
    """The sampler machinery for one device (see the module doc)."""

    def __init__(self, device: Device, spec: TelemetrySpec | None = None):
        self.device = device
        self.spec = spec or device.spec.telemetry
        self.transport = device.transport
        self._runner: str | None = None
        self._shell: str | None = None
        self._clock: str | None = None
        self._plan: ChannelPlan | None = None
        self._simulated: bool | None = None
        self._odpm: bool | None = None

    # ---------------------------------------------------------------- setup
    def prepare(self) -> None:
        """Stage the runner, choose its shell, discover the channels (once)."""
        if self._runner is None:
            self._runner = self.device.stage(RUNNER, category="bin/melt")
        if self._shell is None or self._odpm is None:
            self._shell, self._clock, self._odpm = self._probe()
        if self._plan is None:
            self._plan = discover_channels(self.transport, self.spec)

    def _probe(self) -> tuple[str, str, bool]:
        """The runner's shell and clock, and whether ODPM counters exist: one shell call."""
        # abilities, not names: a bash older than 5.0 (RHEL 8, Ubuntu 18.04,
        # JetPack 4) has no $EPOCHREALTIME, so it is chosen only when it has one
        script = ('echo "sh=${EPOCHREALTIME:-}"; b=$(command -v bash 2>/dev/null); '
                  '[ -n "$b" ] && [ -n "$("$b" -c \'echo "${EPOCHREALTIME:-}"\' 2>/dev/null)" ] '
                  '&& echo "bash=$b"; '
                  f'echo "odpm=$(ls {ODPM_GLOB} 2>/dev/null | head -n 1)"; true')
        out = self.transport.shell(script, timeout=15, check=False).stdout
        found = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        odpm = self.spec.odpm == "auto" and bool(found.get("odpm", "").strip())
        if found.get("sh"):
            return "sh", "realtime", odpm
        if found.get("bash"):
            return found["bash"], "realtime", odpm
        return "sh", "uptime", odpm

    @property
    def plan(self) -> ChannelPlan:
        self.prepare()
        assert self._plan is not None
        return self._plan

    @property
    def clock(self) -> str:
        self.prepare()
        assert self._clock is not None
        return self._clock

    @property
    def simulated(self) -> bool:
        if self._simulated is None:
            try:
                self._simulated = bool(self.device.simulated or self.device.properties().get("simulated"))
            except Exception:  # properties are best effort here
                self._simulated = bool(self.device.simulated)
        return self._simulated

    # ---------------------------------------------------------------- clock
    def clock_offset(self, n: int | None = None) -> ClockOffset:
        """Host->device offset of the runner's clock (min-RTT over ``n`` round trips)."""
        self.prepare()
        if self._clock == "realtime":
            cmd = [self._shell or "sh", "-c", 'echo "$EPOCHREALTIME"']
            resolution = 1e-6
        else:
            cmd = ["cat", "/proc/uptime"]
            resolution = 0.01

        def read() -> float:
            return parse_device_time(self.transport.run(cmd, timeout=15).stdout)

        return measure_offset(read, n=n or self.spec.clock_probes, resolution_s=resolution,
                              device_clock=self._clock or "realtime")

    # ---------------------------------------------------------------- a job
    def job_script(self, steps: Sequence[Step], *, idle_s: float | None = None,
                   after: str | None = None) -> str:
        """The ``job.sh`` the runner sources (pure; exposed for tests)."""
        plan = self.plan
        period_us = max(1000, int(round(1e6 / self.spec.sample_hz)))
        hwm_every = max(1, int(round(self.spec.sample_hz)))
        idle = self.spec.idle_s if idle_s is None else idle_s
        q = shlex.quote
        lines = [
            f"MELT_PERIOD_US={period_us}",
            f"MELT_SLOW_EVERY={self.spec.slow_every}",
            f"MELT_HWM_EVERY={hwm_every}",
            f"MELT_IDLE_S={q(f'{idle:g}')}",
            f"MELT_FAST={q(' '.join(c.path for c in plan.fast))}",
            f"MELT_SLOW={q(' '.join(c.path for c in plan.slow))}",
        ]
        if self.simulated:
            lines.append(f"MELT_TRUTH={q(TRUTH_LOG)}")
        if after:
            lines.append(f"MELT_AFTER_CMD={q(after)}")
        if self._odpm:
            lines.append(f"MELT_MARK_CMD={q(f'cat {ODPM_GLOB}')}")
        if plan.mark_files:
            lines.append(f"MELT_MARK_FILES={q(' '.join(plan.mark_files))}")
        tail = self.spec.tail_s
        if tail is None:
            bat = self.spec.battery
            tail = (bat.update_period_s + bat.averaging_s + 0.1) if bat and bat.update_period_s else 0.0
        if tail:
            lines.append(f"MELT_TAIL_S={q(f'{tail:g}')}")
        if self.spec.tegrastats_interval_ms:
            lines.append(f"MELT_AUX_CMD={q(f'tegrastats --interval {self.spec.tegrastats_interval_ms}')}")
        lines.append("melt_steps() {")
        for i, step in enumerate(steps):
            env = [q(f"{k}={v}") for k, v in step.env.items()]
            limit = max(1, int(math.ceil(step.timeout_s)))
            words = ["melt_step", str(i), q(step.phase), str(limit), *env, "--",
                     *(q(str(a)) for a in step.argv)]
            lines.append("  " + " ".join(words))
        lines.append("  :")
        lines.append("}")
        return "\n".join(lines) + "\n"

    def run(self, steps: Sequence[Step], *, idle_s: float | None = None, after: str | None = None,
            during: Callable[[Any], Any] | None = None) -> JobOutput:
        """Run ``steps`` under the runner; returns the parsed outputs.

        Three round trips when the device has ``tar``: one shell call writes
        ``job.sh`` (inline when it is small, else pushed first), runs the
        runner and packs its files; one pull; one clean-up. ``after``: a
        shell script the runner runs once the steps are done (its output is
        ``JobOutput.after``), saving a round trip.

        With ``during``, the runner runs in the background and ``during(live)``
        on this thread (a client driving a server step, see
        :mod:`melt.telemetry.live`); what it returns is ``JobOutput.client``.
        Raises the transport's errors; on any interruption the runner on the
        device is stopped before the exception goes on.
        """
        self.prepare()
        if not steps:
            raise ValueError("a job needs at least one step")
        remote = f"{self.device.workdir().rstrip('/')}/jobs/{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
        q = shlex.quote
        script = self.job_script(steps, idle_s=idle_s, after=after) + "MELT_PACK=1\n"
        with tempfile.TemporaryDirectory(prefix="melt-job-") as tmp:
            local = Path(tmp)
            if len(script) <= _INLINE_SCRIPT_MAX:
                write = f"mkdir -p {q(remote)} && printf '%s' {q(script)} > {q(remote + '/job.sh')} && "
            else:
                (local / "job.sh").write_text(script)
                self.transport.push(local / "job.sh", f"{remote}/job.sh")
                write = ""
            idle = self.spec.idle_s if idle_s is None else idle_s
            limit = sum(s.timeout_s + 5 for s in steps) + idle + 60
            t0 = time.monotonic()
            client = None
            try:
                argv = [self._shell or "sh", self._runner or "", remote]
                if during is None:
                    done = self.transport.shell(f"{write}{shlex.join(argv)}", timeout=limit, check=False)
                else:
                    from melt.telemetry.live import run_beside

                    if write:
                        self.transport.shell(f"{write}true", timeout=60)
                    done, client = run_beside(self.transport, argv, timeout=limit, remote=remote,
                                              during=during)
            except BaseException:
                self._abort(remote)
                raise
            duration = time.monotonic() - t0
            files = self._pull(remote, local / "out", packed="melt-packed" in done.stdout)
            try:
                trace = parse_samples(files.get("samples", ""), files.get("marks", ""),
                                      files.get("meta", ""), self.plan)
            except ValueError as exc:
                tail = (done.stderr or done.stdout).strip()[-300:]
                raise TransportError(f"the job runner on {self.device.name} failed "
                                     f"(exit {done.returncode}): {exc}: {tail}") from None
            truth = self._truth(trace, files.get("truth")) if self.simulated else None
            self.transport.shell(f"rm -rf {q(remote)} {q(remote + '.tar')}", timeout=60, check=False)
        results = []
        for i, step in enumerate(steps):
            # several steps may share a phase name: take the i-th start/end of that name
            starts = [t for t, n in trace.marks if n == f"{step.phase}_start"]
            ends = [t for t, n in trace.marks if n == f"{step.phase}_end"]
            k = sum(1 for s in steps[:i] if s.phase == step.phase)
            start = starts[k] if k < len(starts) else math.nan
            end = ends[k] if k < len(ends) else math.nan
            status = files.get(f"status.{i}", "").strip()
            rc = int(status) if status.lstrip("-").isdigit() else -1
            results.append(StepResult(i, step.phase, start, end, rc, files.get(f"out.{i}", ""),
                                      files.get(f"err.{i}", ""), f"timeout.{i}" in files))
        return JobOutput(results, trace, files.get("markdata", ""), files.get("aux", ""), truth,
                         duration, remote, list(steps), client, files.get("markfiles", ""),
                         files.get("after"))

    def _abort(self, remote: str) -> None:
        q = shlex.quote
        pidfile = q(f"{remote}/runner.pid")
        try:
            self.transport.shell(
                f"p=$(cat {pidfile} 2>/dev/null); [ -n \"$p\" ] && kill -TERM \"$p\" 2>/dev/null;"
                f" i=0; while [ -n \"$p\" ] && kill -0 \"$p\" 2>/dev/null && [ $i -lt 50 ]; do"
                f" sleep 0.1; i=$((i+1)); done; true",
                timeout=20, check=False)
        except (TransportError, CommandTimeout, OSError):
            pass

    def _pull(self, remote: str, local: Path, *, packed: bool) -> dict[str, str]:
        """The runner's output files, by name.

        ``packed``: the runner left them in ``REMOTE.tar``, pulled in one
        transfer (every stream costs a round trip); else file by file (a
        device without tar).
        """
        q = shlex.quote
        local.mkdir(parents=True, exist_ok=True)
        if packed:
            try:
                self.transport.pull(f"{remote}.tar", local / "out.tar")
                files = {}
                with tarfile.open(local / "out.tar") as tar:
                    for member in tar.getmembers():  # regular files only, names only
                        handle = tar.extractfile(member) if member.isfile() else None
                        if handle is not None:
                            name = member.name.rsplit("/", 1)[-1]
                            data = handle.read(MAX_JOB_FILE_BYTES + 1)
                            if len(data) > MAX_JOB_FILE_BYTES:
                                raise OutputTooLargeError(f"the job file {name!r} from the device",
                                                          MAX_JOB_FILE_BYTES)
                            files[name] = data.decode(errors="replace")
                return files
            except (tarfile.TarError, OSError, TransportError):
                pass  # fall back to one pull per file
        listing = self.transport.shell(f"ls {q(remote)}", timeout=30, check=False).stdout
        files: dict[str, str] = {}
        for name in listing.split():
            if name in _NOT_PULLED:
                continue
            # the device names these files: each must be a plain name inside the job's folder
            path = confined(local, name)
            self.transport.pull(f"{remote}/{name}", path)
            files[name] = _read_pulled(path)
        return files

    def _truth(self, trace: Trace, text: str | None) -> tuple[np.ndarray, np.ndarray] | None:
        """The virtual device's cumulative true energy over the job, on the trace's clock.

        ``text``: the runner's slice of the truth log (``truth``), else it is read now.
        """
        col = _TRUTH_TIME_COLUMN.get(trace.clock)
        if col is None or trace.frame.empty:
            return None
        if text is None:
            lo = trace.t0_device_s - 1.0
            hi = trace.t0_device_s + float(trace.frame["t_s"].max()) + 1.0
            script = (f"awk -F, -v a={lo:.6f} -v b={hi:.6f} "
                      f"'NR > 1 && ${col} >= a && ${col} <= b {{ print ${col}, $4 }}' {TRUTH_LOG}")
            text = self.transport.shell(script, timeout=60, check=False).stdout
        rows = [line.split() for line in text.splitlines()]
        data = np.array([[float(a), float(b)] for a, b in (x for x in rows if len(x) == 2)])
        if data.size == 0:
            return None
        return data[:, 0] - trace.t0_device_s, data[:, 1]

    def describe(self) -> dict[str, Any]:
        """Provenance of the sampler set-up."""
        self.prepare()
        return {"runner": self._runner, "shell": self._shell, "clock": self._clock,
                "sample_hz": self.spec.sample_hz, "slow_every": self.spec.slow_every,
                "channels": self.plan.describe(), "odpm": bool(self._odpm)}


def _read_pulled(path: Path) -> str:
    """A pulled job file's text, never through a symlink, at most :data:`MAX_JOB_FILE_BYTES`."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        if path.is_symlink():
            raise UnsafePathError(f"refused the pulled file {path.name!r}: it is a symlink") from None
        raise TransportError(f"cannot read the pulled file {path.name!r}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as f:
        data = f.read(MAX_JOB_FILE_BYTES + 1)
    if len(data) > MAX_JOB_FILE_BYTES:
        raise OutputTooLargeError(f"the job file {path.name!r} from the device", MAX_JOB_FILE_BYTES)
    return data.decode(errors="replace")

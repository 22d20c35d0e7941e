"""The executor that measures: runs each job under melt's on-device runner.

``TelemetryExecutor().execute(device, invocation)`` accepts one
:class:`~melt.frameworks.base.Invocation` or a list of ``(phase, Invocation)``
(``[("prefill", ...), ("decode", ...)]``: separate timed windows in one
runner script). Around the job it optionally waits for the device to cool
down and checks the battery, takes a health snapshot before and after (the
previous job's after stands as the next one's before when it is a few seconds
old and the device did not wait to cool: ``health.before_taken``), and
measures the host/device clock offset. It returns the inference output plus:

- ``metrics``: the telemetry metrics of docs/results-format.md (energy per
  phase gross and net of idle, per token, power, temperatures, battery drain,
  peak RSS, ``throttled``, ``sample_rate_hz``; ``true_energy_*`` on virtual
  devices);
- ``files["trace.parquet"]``: the samples;
- ``provenance``: ``phases``, ``throttled_intervals``, ``metrics_missing``,
  ``telemetry`` (sampler set-up, achieved rate, sampler CPU), ``clock``,
  ``health`` (before/after), ``cooldown``, ``steps``, ``battery`` (charging
  evidence), ``energy_error_model`` and ``energy_resolution``.

Energies carry ``_u95`` intervals (:mod:`melt.telemetry.uncertainty`); a job
measured while the battery charged has ``charging = 1`` and no fuel-gauge
energies (:mod:`melt.telemetry.charging`).
"""

from __future__ import annotations

import copy
import shlex
import time
from typing import Any, Sequence

import numpy as np
import pandas as pd

from melt.devices.base import Device
from melt.devices.state import health_script, health_snapshot, parse_health
from melt.errors import JobFailed
from melt.runner.execute import Execution, PlainExecutor
from melt.store.paths import cache_dir
from melt.store.runs import utc_now
from melt.telemetry.baseline import BaselineStore, IdleBaseline, conditions_from_health, reuse_verdict
from melt.telemetry.charging import CHARGING_REASON, charging_state
from melt.telemetry.cooldown import check_battery, wait_for_cooldown
from melt.telemetry.energy import WindowError, integrate
from melt.telemetry.instruments import Instrument, InstrumentTrace, align
from melt.telemetry.metrics import (
    ENERGY_PHASES,
    GaugeInfo,
    clean_numbers,
    job_metrics,
    rail_gauge,
    rail_quantum_w,
)
from melt.telemetry.phases import METHODS, derive_phases
from melt.telemetry.session import JobOutput, Step, TelemetrySession
from melt.telemetry.trace import to_parquet_bytes
from melt.telemetry.uncertainty import sampled_energy_bound


#: Without host-side instruments, a clock offset is re-measured after this long (s).
OFFSET_MAX_AGE_S = 120.0
#: Without host-side instruments the offset is provenance only: this many round trips.
PROVENANCE_PROBES = 3
#: A job's "before" health snapshot is the previous job's "after" when that one was taken on the
#: same device at most this long ago (s) and the device has not waited to cool since: nothing but
#: melt's own bookkeeping ran in between, and a shell call per job is saved.
HEALTH_REUSE_S = 5.0


def as_steps(invocation: Any) -> list[Step]:
    """One invocation -> ``[Step("run", ...)]``; ``[(phase, invocation), ...]`` -> one step each."""
    if isinstance(invocation, (list, tuple)) and invocation and isinstance(invocation[0], (list, tuple)):
        return [Step(str(phase), tuple(inv.argv), dict(inv.env), float(inv.timeout_s))
                for phase, inv in invocation]
    return [Step("run", tuple(invocation.argv), dict(invocation.env), float(invocation.timeout_s))]


class TelemetryExecutor:
    """Runs invocations under the on-device runner and measures them (see module doc).

    ``cooldown``: wait for ``DeviceSpec.cooldown`` and check the battery before
    each job. ``health``: snapshots before and after. ``instruments``: host-side
    power monitors sampled during the job; with ``energy_source="auto"`` the
    first instrument's power is the one integrated when the device has no
    fuel gauge, and always reported as ``<name>_energy_<phase>_j``.
    """

    def __init__(self, *, cooldown: bool = True, health: bool = True,
                 instruments: Sequence[Instrument] = (), energy_source: str = "auto",
                 idle_s: float | None = None, baselines: BaselineStore | None = None):
        self.cooldown = cooldown
        self.health = health
        self.instruments = list(instruments)
        self.energy_source = energy_source
        self.idle_s = idle_s
        self._sessions: dict[int, TelemetrySession] = {}
        self._offsets: dict[int, tuple[float, Any]] = {}
        self._baselines = BaselineStore(cache_dir() / "baselines") if baselines is None else baselines
        self._rest_caps: dict[int, dict[str, float]] = {}
        self._last_after: dict[int, tuple[float, dict[str, Any]]] = {}  # device -> (monotonic s, snapshot)

    def session(self, device: Device) -> TelemetrySession:
        """The (cached) telemetry session of ``device``."""
        key = id(device)
        if key not in self._sessions:
            self._sessions[key] = TelemetrySession(device)
        return self._sessions[key]

    def _clock_offset(self, session: TelemetrySession) -> Any:
        """The host/device offset: measured for every job when host instruments need
        it (``telemetry.clock_probes`` round trips), else -- provenance only -- with
        at most ``PROVENANCE_PROBES`` and reused for ``OFFSET_MAX_AGE_S`` (a few dozen
        round trips per job would cost more than the jobs of a small model)."""
        now = time.monotonic()
        cached = self._offsets.get(id(session))
        if self.instruments:
            cached = self._offsets[id(session)] = (now, session.clock_offset())
        elif cached is None or now - cached[0] > OFFSET_MAX_AGE_S:
            probes = min(PROVENANCE_PROBES, session.spec.clock_probes)
            cached = self._offsets[id(session)] = (now, session.clock_offset(probes))
        return cached[1]

    def execute(self, device: Device, invocation: Any) -> Execution:
        steps = as_steps(invocation)
        if not device.spec.telemetry.enabled:
            if len(steps) == 1:
                return PlainExecutor().execute(device, invocation)
            raise JobFailed("phased invocations need telemetry enabled on the device")
        provenance: dict[str, Any] = {}
        previous = self._last_after.pop(id(device), None)  # used once: a job that fails leaves none
        if self.cooldown:
            if device.spec.cooldown is not None:
                result = wait_for_cooldown(device, device.spec.cooldown)
                provenance["cooldown"] = result.as_dict()
                if not result.ok and device.spec.cooldown.on_timeout == "fail":
                    raise JobFailed(f"cool-down failed: {result.reason}")
            if device.spec.min_battery_pct is not None:
                provenance["battery_check"] = check_battery(device).as_dict()
        session = self.session(device)
        session.prepare()
        tel = device.spec.telemetry
        battery_dir = session.plan.battery_dir
        idle_s = tel.idle_s if self.idle_s is None else self.idle_s
        key = BaselineStore.key(device.name, device.properties(), device.spec.state.model_dump(mode="json"))
        baseline = self._baselines.get(key) if idle_s > 0 and tel.idle_reuse else None
        if self.health or baseline is not None:
            health = provenance.setdefault("health", {})
            age = reusable_age(previous, time.monotonic(), provenance.get("cooldown"))
            if previous is not None and age is not None:
                health["before"] = copy.deepcopy(previous[1])
                health["before_taken"] = {"by": "the previous job's runner, after its steps",
                                          "age_s": round(age, 3)}
            else:
                health["before"] = health_snapshot(device.transport, thermal_dir=tel.thermal_dir,
                                                   battery_dir=battery_dir)
        conditions = conditions_from_health(provenance.get("health", {}).get("before"), tel.skin_zone)
        reuse, why = False, "telemetry.idle_reuse is off: a baseline before every job"
        if idle_s > 0 and tel.idle_reuse:
            reuse, why = reuse_verdict(baseline, conditions, time.time(),
                                       max_age_s=tel.idle_reuse.max_age_s,
                                       max_temp_change_c=tel.idle_reuse.max_temp_change_c,
                                       max_battery_change_pct=tel.idle_reuse.max_battery_change_pct)
        if not self.health:
            provenance.pop("health", None)  # read for the baseline's sake only
        offset = self._clock_offset(session)
        for inst in self.instruments:
            inst.start()
        after = health_script(thermal_dir=tel.thermal_dir, battery_dir=battery_dir) if self.health else None
        try:  # a served job's client drives its server while the runner runs
            out = session.run(steps, idle_s=0.0 if reuse else idle_s, after=after,
                              during=getattr(invocation, "client", None))
        finally:
            inst_traces = [inst.stop() for inst in self.instruments]
        if self.health:  # the runner took the snapshot after the steps, or it is taken now
            provenance["health"]["after"] = (parse_health(out.after) if out.after is not None else health_snapshot(
                device.transport, thermal_dir=tel.thermal_dir, battery_dir=battery_dir))
            self._last_after[id(device)] = (time.monotonic(), copy.deepcopy(provenance["health"]["after"]))
        execution = self._execution(device, session, out, offset, inst_traces, provenance,
                                    baseline if reuse else None)
        now = time.time()
        if reuse and baseline is not None:
            execution.provenance["idle_baseline"] = baseline.describe(now, reused=True, reason=why)
        elif idle_s > 0 and {"idle_power_w", "idle_power_w_u95"} <= execution.metrics.keys():
            # a baseline without its interval is not kept: reused, it would claim to be exact
            fresh = IdleBaseline(execution.metrics["idle_power_w"], utc_now(), now, conditions,
                                 out.trace.t0_device_s, execution.metrics["idle_power_w_u95"])
            if tel.idle_reuse:
                self._baselines.put(key, fresh)
            execution.provenance["idle_baseline"] = fresh.describe(now, reused=False, reason=why)
        return execution

    # ----------------------------------------------------------------------------

    def _execution(self, device: Device, session: TelemetrySession, out: JobOutput, offset: Any,
                   inst_traces: list[InstrumentTrace], provenance: dict[str, Any],
                   baseline: IdleBaseline | None) -> Execution:
        trace, steps = out.trace, out.steps
        frame = trace.frame
        window = (steps[0].start_s, steps[-1].end_s)
        idle = (trace.mark("idle_start"), trace.mark("idle_end"))
        plan = derive_phases(idle if None not in idle else None, steps,  # type: ignore[arg-type]
                             clock=trace.clock, t0_device_s=trace.t0_device_s)
        to_trace = offset.offset_s - trace.t0_device_s  # host wall clock -> t_s
        if out.client is not None:
            from melt.runner.served import served_plan

            plan = served_plan(idle if None not in idle else None, steps[0], out.client, to_trace)

        primary = None
        for inst in inst_traces:
            t, p = align(inst, offset.offset_s, trace.t0_device_s)
            col = f"{inst.name}_power_w"
            frame = _merge_samples(frame, t, p, col)
            if self.energy_source == inst.name or (self.energy_source == "auto" and primary is None
                                                    and not session.plan.has_power):
                primary = col
        if out.aux and device.spec.telemetry.tegrastats_interval_ms:
            from melt.telemetry.tegrastats import tegrastats_frame

            extra = tegrastats_frame(out.aux, device.spec.telemetry.tegrastats_interval_ms)
            # rails the sampler read itself win over tegrastats' once-per-interval copies
            extra = extra.drop(columns=[c for c in extra.columns if c != "t_s" and c in frame.columns])
            if not extra.empty and len(extra.columns) > 1:
                frame = pd.concat([frame, extra], ignore_index=True, sort=False)
                frame = frame.sort_values("t_s", kind="stable").reset_index(drop=True)
        power_frame = frame
        if primary is not None:
            power_frame = frame.drop(columns=[c for c in ("power_w", "current_ua") if c in frame.columns])
            power_frame = power_frame.rename(columns={primary: "power_w"})

        # the cap each core rested at: the highest seen before any job of this device, not the
        # hardware maximum (a policy cap below it is not throttling)
        reference = self._rest_caps.setdefault(id(device), {})
        before = provenance.get("health", {}).get("before", {})
        for cpu, info in (before.get("cpufreq") or {}).items():
            if info.get("max_khz"):
                col = f"cpufreq_max_{cpu}_khz"
                reference[col] = max(reference.get(col, 0.0), float(info["max_khz"]))
        result = job_metrics(power_frame, plan, window, power_missing=session.plan.missing.get("power"),
                             skin_zone=device.spec.telemetry.skin_zone, throttle_reference=reference,
                             truth=out.truth, gauge=gauge_info(device.spec.telemetry, session.plan,
                                                               primary is not None, frame),
                             idle_power=(baseline.power_w, baseline.u95_w) if baseline else None,
                             rail_refresh_ms=session.plan.rail_refresh_ms)
        metrics = dict(result.metrics)
        missing = dict(result.missing)
        battery = charging_state(frame, out.markfiles, window)
        if battery["charging"] is None:  # nothing read: unknown, not "not charging"
            missing["charging"] = battery["note"]
        else:
            metrics["charging"] = int(battery["charging"])
        provenance["battery"] = battery
        if battery["charging"] and primary is None:
            reason = CHARGING_REASON.format("; ".join(battery["evidence"]))
            for key in [k for k in metrics if k.startswith(("energy_", "avg_power_w", "idle_power_w"))]:
                metrics.pop(key)
                if not key.endswith("_u95"):
                    missing[key] = reason
        if result.resolution:
            provenance["energy_resolution"] = {f"energy_{k}_resolution": v for k, v in result.resolution.items()}
        if result.gauge:
            provenance["energy_error_model"] = result.gauge
        for inst in inst_traces:
            col = f"{inst.name}_power_w"
            sub = frame[["t_s", col]].dropna()
            for name in ENERGY_PHASES:
                chosen = [ph for ph in plan.phases if ph.name == name]
                try:
                    if chosen:
                        value = sum(integrate(sub["t_s"], sub[col], ph.start_s, ph.end_s) for ph in chosen)
                        p = sub[col].to_numpy(dtype=float)
                        # the edges are placed through the clock offset: its uncertainty, per edge
                        est = sampled_energy_bound(
                            value, float(p.max() - p.min()) if p.size else 0.0,
                            offset.uncertainty_s * len(chosen),
                            sample_period_s=1.0 / inst.rate_hz if inst.rate_hz else 0.0,
                            duration_s=sum(ph.duration_s for ph in chosen))
                        metrics[f"{inst.name}_energy_{name}_j"] = value
                        metrics[f"{inst.name}_energy_{name}_j_u95"] = est.u95
                except WindowError as exc:
                    missing[f"{inst.name}_energy_{name}_j"] = str(exc)
        if out.markdata:
            from melt.telemetry.odpm import phase_energy

            odpm, rails = phase_energy(out.markdata, sorted({s.phase for s in steps}))
            metrics.update(odpm)
            if rails:
                provenance["odpm_rails_j"] = rails
        peak = max(filter(None, (metrics.get("peak_rss_bytes"), trace.peak_hwm_bytes)), default=None)
        if peak:
            metrics["peak_rss_bytes"] = float(peak)
            missing.pop("peak_rss_bytes", None)
        rate = trace.sample_rate_hz
        if rate is not None:
            metrics["sample_rate_hz"] = rate
        if trace.sampler_cpu_pct is not None:
            metrics["sampler_cpu_pct"] = trace.sampler_cpu_pct
        loads = [ph for ph in plan.phases if ph.name == "load" and ph.source != "timings-at-exit"]
        if loads:
            metrics["load_ms"] = 1000.0 * sum(ph.duration_s for ph in loads)
        # temperatures of the health snapshot count as thermal-status evidence of throttling
        after = provenance.get("health", {}).get("after", {})
        status_before, status_after = before.get("thermal_status"), after.get("thermal_status")
        if isinstance(status_before, int) and isinstance(status_after, int) and status_after > status_before:
            metrics["throttled"] = 1  # a status read only once is no rise
        if metrics.get("throttled") and not result.throttled_intervals:
            missing.setdefault("throttled_intervals", "thermal status rose during the job; "
                                                      "no frequency drop was sampled")

        rc = next((s.returncode for s in steps if s.returncode != 0), 0)
        stdout = "".join(s.stdout for s in steps)
        stderr = "".join(s.stderr for s in steps)
        if out.client is not None:  # the client's transcript is the output; melt stopped the server
            import json

            from melt.runner.served import served_tables
            from melt.telemetry.metrics import temperature_column

            tables = served_tables(power_frame, out.client, to_trace,
                                   temp_col=temperature_column(frame, device.spec.telemetry.skin_zone),
                                   throttled=[iv.as_dict() for iv in result.throttled_intervals])
            metrics.update(tables["metrics"])
            missing.update(tables["missing"])
            for key in ("turns", "conversation_totals", "series"):
                if key in tables:
                    provenance[key] = tables[key]
            stdout, rc = json.dumps(out.client), 0
        provenance.update({
            "phases": [ph.as_dict() for ph in plan.phases],
            "phase_source": {"method": plan.method, "detail": METHODS[plan.method]},
            "throttled_intervals": [iv.as_dict() for iv in result.throttled_intervals],
            "metrics_missing": {k: v for k, v in missing.items() if k not in metrics},
            "telemetry": {**session.describe(), "sample_rate_hz": rate,
                          "sampler_cpu_pct": trace.sampler_cpu_pct, "ticks": trace.ticks,
                          "t0_device_s": trace.t0_device_s,
                          "instruments": {i.name: {"samples": len(i), "rate_hz": i.rate_hz}
                                          for i in inst_traces},
                          "energy_source": primary.removesuffix("_power_w") if primary else "battery"},
            "clock": offset.as_dict(),
            "steps": [{"phase": s.phase, "returncode": s.returncode, "start_s": round(s.start_s, 6),
                       "end_s": round(s.end_s, 6), "timed_out": s.timed_out,
                       "command": shlex.join(st.argv)}
                      for s, st in zip(steps, out.step_specs)],
        })
        if out.truth is not None:
            provenance["telemetry"]["truth"] = "the virtual device's physical model (true_energy_*)"
        files = {"trace.parquet": to_parquet_bytes(frame)}
        return Execution(stdout, stderr, rc, max(0.0, window[1] - window[0]),
                         metrics=clean_numbers(metrics), files=files, provenance=provenance)


def reusable_age(previous: tuple[float, dict[str, Any]] | None, now_s: float,
                 cooldown: dict[str, Any] | None) -> float | None:
    """How old (s) the previous job's after snapshot is, when it may stand as this job's before;
    ``None`` when it may not: there is none, it is older than :data:`HEALTH_REUSE_S`, the clock went
    back, or the device waited to cool since (``cooldown``: this job's cool-down provenance)."""
    if previous is None:
        return None
    age = now_s - previous[0]
    if not 0 <= age <= HEALTH_REUSE_S:
        return None
    if cooldown and (cooldown.get("polls", 1) > 1 or not cooldown.get("ok", True)):
        return None
    return age


def gauge_info(tel: Any, plan: Any, instrument: bool, frame: pd.DataFrame | None = None) -> GaugeInfo:
    """The power sensor's error-model inputs from the device config (a host instrument: sampled
    power; a device powered through its rails: those rails' monitor, as each rail is read)."""
    if instrument:
        return GaugeInfo(update_period_s=None, averaging_s=0.0, gain_error_pct=1.0, current_unit=None)
    bat = tel.battery
    if bat is None and plan.power_rails:  # the rails are the device's power: read as rails are
        refresh = [plan.rail_refresh_ms[r] for r in plan.power_rails if r in plan.rail_refresh_ms]
        quantum = rail_quantum_w(frame, plan.power_rails) if frame is not None else 0.0
        return rail_gauge(max(refresh) / 1000.0 if refresh else None, quantum)
    if bat is None:
        return GaugeInfo(current_unit=plan.current_unit)
    return GaugeInfo(update_period_s=bat.update_period_s, averaging_s=bat.averaging_s,
                     gain_error_pct=bat.gain_error_pct, current_unit=plan.current_unit)


def _merge_samples(frame: pd.DataFrame, t: np.ndarray, values: np.ndarray, column: str) -> pd.DataFrame:
    extra = pd.DataFrame({"t_s": t, column: values})
    merged = pd.concat([frame, extra], ignore_index=True, sort=False)
    return merged.sort_values("t_s", kind="stable").reset_index(drop=True)

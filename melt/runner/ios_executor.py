"""The executor of iPhone jobs: the benchmark app instead of a shell.

``IosExecutor().execute(device, invocation)`` runs a ``bench`` or
``generate`` invocation (``llama-bench`` / ``llama-completion`` and their
arguments) through :meth:`melt.devices.ios.IosDevice.run_app`, and returns
the app's output with what iOS lets the host see:

- ``energy_impact_mean`` / ``energy_impact_max``: the system's per-process
  energy-impact score sampled through DVT, a unitless number and never
  joules (what it is stands in ``provenance["energy_impact"]``);
- ``thermal_level_start`` / ``thermal_level_end``: iOS's thermal state
  before and after (0 nominal, 1 fair, 2 serious, 3 critical), and
  ``throttled`` when it rose;
- ``provenance["metrics_missing"]``: each figure a shell-based device gives
  and an iPhone cannot, with why.

Before each job it waits until iOS reports ``ios.max_thermal_state`` or a
cooler state (cool-down gated on the thermal state iOS reports, with the
``cooldown`` section's timeout, poll and ``on_timeout``).
"""

from __future__ import annotations

import posixpath
import secrets
import time
from typing import Any

from melt.config.specs import IosSpec
from melt.errors import JobFailed
from melt.runner.execute import Execution
from melt.telemetry.metrics import ENERGY_PHASES

NO_JOULES = ("iOS exposes no battery current or power to the host: the energy figure is the "
             "unitless energy impact (energy_impact_mean), never joules")
NO_SHELL_SAMPLER = ("the 50 Hz sampler runs in a shell on the device and an iPhone has none; "
                    "the host samples the app's energy impact through DVT about once a second")
NO_ZONES = "iOS reports a thermal state (thermal_level_*), not thermal-zone temperatures"

#: figures the shell devices give that an iPhone job cannot, with why
MISSING_ON_IOS: dict[str, str] = {
    **{f"energy_{phase}_j": NO_JOULES for phase in ENERGY_PHASES},
    **{f"energy_per_token_{phase}_j": NO_JOULES for phase in ENERGY_PHASES},
    "avg_power_w": NO_JOULES,
    "idle_power_w": NO_JOULES,
    "sample_rate_hz": NO_SHELL_SAMPLER,
    "peak_rss_bytes": "DVT's energy instrument reports no memory of the process",
    "temp_max_c": NO_ZONES,
    "phases": "phase windows come from the shell runner's marks; the app writes only its output",
}


def _level(state: str | None) -> int | None:
    from melt.devices.ios import THERMAL_STATES

    return THERMAL_STATES.index(state) if state in THERMAL_STATES else None


def run_invocation(device: Any, invocation: Any, *, sample: bool) -> Execution:
    """Run one ``bench`` / ``generate`` invocation through the app; with ``sample``, its energy impact."""
    from melt.devices.ios import APP_TOOLS, ENERGY_NOTE, energy_impact_metrics

    if getattr(invocation, "client", None) is not None:
        raise JobFailed("served workloads run llama-server and a host client; melt's iPhone app runs "
                        "llama-bench and llama-completion only")
    if isinstance(invocation, (list, tuple)):
        raise JobFailed("a job in several processes needs a shell; the iPhone app runs one")
    tool = posixpath.basename(invocation.argv[0])
    if tool not in APP_TOOLS:
        raise JobFailed(f"melt's iPhone app runs {' and '.join(APP_TOOLS)}, not {tool}")
    out_dir = f"melt/out/{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(4)}"
    run = device.run_app(list(invocation.argv[1:]), out_dir=out_dir, tool=tool, timeout_s=invocation.timeout_s,
                         sample_every_s=1.0 if sample else None)
    metrics: dict[str, Any] = {}
    provenance: dict[str, Any] = {"app_out": out_dir, "thermal_state": dict(run.thermal)}
    if sample:
        energy = energy_impact_metrics(run.samples)
        missing = dict(MISSING_ON_IOS)
        if energy:
            metrics.update({k: v for k, v in energy.items() if k != "energy_impact_note"})
            metrics["energy_impact_samples"] = float(len(run.samples))
            provenance["energy_impact"] = {"note": ENERGY_NOTE, "samples": run.samples[-600:]}
        else:
            missing["energy_impact_mean"] = ("iOS gave no energy-impact sample while the app ran (too short "
                                             "a run, or DVT's energy instrument is not available)")
        start, end = _level(run.thermal.get("start")), _level(run.thermal.get("end"))
        if start is not None and end is not None:
            metrics["thermal_level_start"], metrics["thermal_level_end"] = float(start), float(end)
            metrics["throttled"] = 1 if end > start else 0
            if end > start:
                missing["throttled_intervals"] = ("iOS's thermal state rose during the job; it tells no "
                                                  "time or frequency of throttling")
        else:
            missing["throttled"] = "the app reported no thermal state"
        provenance["metrics_missing"] = missing
    return Execution(run.stdout, run.stderr, run.returncode, run.duration_s, metrics=metrics,
                     provenance=provenance)


def wait_for_thermal_state(device: Any, ios: IosSpec, cooldown: Any) -> dict[str, Any]:
    """Wait until iOS reports ``ios.max_thermal_state`` or cooler; how it went (``ok`` false on timeout)."""
    limit = _level(ios.max_thermal_state) or 0
    timeout_s = cooldown.timeout_s if cooldown is not None else 600.0
    poll_s = cooldown.poll_s if cooldown is not None else 2.0
    started = time.monotonic()
    readings: list[list[Any]] = []
    while True:
        state = device.thermal_state()
        waited = round(time.monotonic() - started, 3)
        readings.append([waited, state])
        level = _level(state)
        if level is None:
            return {"ok": True, "waited_s": waited, "source": "iOS thermal state", "readings": readings[-50:],
                    "reason": "the app reported no thermal state: nothing to wait for"}
        if level <= limit:
            return {"ok": True, "waited_s": waited, "source": "iOS thermal state", "max_state": ios.max_thermal_state,
                    "start_state": readings[0][1], "end_state": state, "polls": len(readings),
                    "readings": readings[-50:]}
        if waited >= timeout_s:
            return {"ok": False, "waited_s": waited, "source": "iOS thermal state", "max_state": ios.max_thermal_state,
                    "start_state": readings[0][1], "end_state": state, "polls": len(readings),
                    "readings": readings[-50:],
                    "reason": f"still {state} after {timeout_s:g} s (waiting for {ios.max_thermal_state})"}
        time.sleep(poll_s)


class IosExecutor:
    """Runs iPhone jobs through melt's app, measured as far as iOS allows (see the module doc)."""

    def __init__(self, *, cooldown: bool = True):
        self.cooldown = cooldown

    def execute(self, device: Any, invocation: Any) -> Execution:
        provenance: dict[str, Any] = {}
        if self.cooldown:
            spec = device.spec
            result = wait_for_thermal_state(device, spec.ios or IosSpec(), spec.cooldown)
            provenance["cooldown"] = result
            on_timeout = spec.cooldown.on_timeout if spec.cooldown is not None else "fail"
            if not result["ok"] and on_timeout == "fail":
                raise JobFailed(f"cool-down failed: {result['reason']}")
        execution = run_invocation(device, invocation, sample=True)
        execution.provenance.update(provenance)
        return execution

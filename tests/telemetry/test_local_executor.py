"""The telemetry executor on this machine: real runner script, real processes."""

from __future__ import annotations

import io
import os
import signal
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from melt.config.specs import DeviceSpec, TelemetrySpec
from melt.devices.local import LocalDevice
from melt.frameworks.base import Invocation
from melt.runner.telemetry_executor import TelemetryExecutor
from melt.telemetry.baseline import BaselineStore
from melt.telemetry.session import Step, TelemetrySession
from melt.transports.local import LocalTransport
from tests.helpers import need

BURN = "import time\nt = time.time()\nwhile time.time() - t < 0.6: pass\nprint('done')"


def local(tmp_path, **tel) -> LocalDevice:
    spec = DeviceSpec(name="local", kind="local", workdir=str(tmp_path),
                      telemetry=TelemetrySpec(idle_s=0.3, **tel))
    return LocalDevice(spec, LocalTransport())


def test_phased_job_on_the_local_machine(tmp_path):
    import sys

    ex = TelemetryExecutor(health=True, baselines=BaselineStore(tmp_path / "baselines"))
    device = local(tmp_path)
    e = ex.execute(device, [("prefill", Invocation((sys.executable, "-c", BURN))),
                            ("decode", Invocation(("sleep", "0.4")))])
    assert e.returncode == 0 and e.stdout == "done\n"
    trace = pd.read_parquet(io.BytesIO(e.files["trace.parquet"]))
    assert trace.columns[0] == "t_s" and "rss_bytes" in trace.columns and "cpu_util_pct" in trace.columns
    # the achieved rate depends on this machine's load (its target is in bench/bench_sampler.py):
    # it is what the trace holds, and never more than the 50 Hz asked for
    t = trace["t_s"].to_numpy()
    assert e.metrics["sample_rate_hz"] == pytest.approx((t.size - 1) / (t[-1] - t[0]), rel=1e-6)
    assert 0 < e.metrics["sample_rate_hz"] <= 1.02 * device.spec.telemetry.sample_hz
    assert e.metrics["peak_rss_bytes"] > 1e6
    assert [p["name"] for p in e.provenance["phases"]] == ["idle", "prefill", "decode"]
    clock = e.provenance["clock"]  # half the best round trip (plus resolution): load decides its size
    assert clock["rtt_s"] / 2 <= clock["uncertainty_s"] <= clock["rtt_s"] / 2 + 0.011
    if "power_w" not in trace.columns:  # this machine has no battery: reasons, not zeros
        assert "energy_decode_j" not in e.metrics
        assert e.provenance["metrics_missing"]["energy_decode_j"]
    assert not any(os.listdir(tmp_path / "jobs"))  # job folders are removed after the pull


def test_fallback_shell_without_epochrealtime(tmp_path):
    device = local(tmp_path)
    session = TelemetrySession(device)
    session.prepare()
    session._shell, session._clock = "/bin/sh", "uptime"
    need(not os.path.realpath("/bin/sh").endswith("bash"), "a /bin/sh that is not bash (dash, as on Debian)")
    out = session.run([Step("run", ("sleep", "0.5"))], idle_s=0)
    assert out.trace.clock == "uptime"
    assert out.trace.sample_rate_hz and out.trace.sample_rate_hz > 20


def test_step_timeout_is_enforced_on_the_device(tmp_path):
    device = local(tmp_path)
    out = TelemetrySession(device).run([Step("run", ("sleep", "30"), timeout_s=1)], idle_s=0)
    assert out.steps[0].timed_out and out.steps[0].returncode == 128 + signal.SIGTERM  # stopped by the runner
    assert out.steps[0].end_s - out.steps[0].start_s < 5


def test_ctrl_c_stops_the_runner_and_the_inference_process(tmp_path):
    device = local(tmp_path)
    session = TelemetrySession(device)
    session.prepare()
    marker = f"{time.time_ns()}"
    main = threading.main_thread().ident
    timer = threading.Timer(1.0, lambda: signal.pthread_kill(main, signal.SIGINT))
    timer.start()
    nap = f"sleep 30.{marker[-6:]}"  # a duration no other process on the machine has
    with pytest.raises(KeyboardInterrupt):
        session.run([Step("run", ("sh", "-c", f"{nap}; echo {marker}"))], idle_s=0)
    timer.cancel()
    time.sleep(0.3)
    left = os.popen("ps -eo args").read()
    assert "runner.sh" not in left or str(tmp_path) not in left
    assert nap not in left and marker not in left


def test_a_host_instrument_is_aligned_and_integrated_per_phase(tmp_path):
    import numpy as np

    from melt.telemetry.instruments import FakeInstrument
    from tests.telemetry.test_clock import ShiftedClockTransport

    # The instrument's clock runs 250 s behind the device's and its power ramps with its own
    # time: the phase's energy comes out right only if the measured offset moves the samples
    # by the right amount in the right direction (a constant power would not tell).
    lag = 250.0
    t_start = time.time() - lag

    def ramp(t_host):
        return 1.0 + 0.8 * (t_host - t_start)

    fake = FakeInstrument(ramp, rate_hz=2000, name="bench_psu", clock=lambda: time.time() - lag)
    device = local(tmp_path)
    device.transport = ShiftedClockTransport(LocalTransport(), lag)
    e = TelemetryExecutor(health=False, instruments=[fake]).execute(
        device, [("decode", Invocation(("sleep", "0.5")))])
    clock = e.provenance["clock"]
    assert abs(clock["offset_s"] - lag) < 0.05
    phase = next(p for p in e.provenance["phases"] if p["name"] == "decode")
    t0 = e.provenance["telemetry"]["t0_device_s"]
    # the phase on the instrument's clock, and the ramp's exact integral over it
    a = t0 + phase["start_s"] - clock["offset_s"]
    b = t0 + phase["end_s"] - clock["offset_s"]
    exact = (b - a) + 0.4 * ((b - t_start) ** 2 - (a - t_start) ** 2)
    energy, u95 = e.metrics["bench_psu_energy_decode_j"], e.metrics["bench_psu_energy_decode_j_u95"]
    assert energy == pytest.approx(exact, rel=1e-3)
    # a second off moves the window by 0.8 W/s * 0.5 s: far outside the interval
    assert u95 < 0.8 * 0.5 * 0.5
    trace = pd.read_parquet(io.BytesIO(e.files["trace.parquet"]))
    assert "bench_psu_power_w" in trace.columns
    assert np.all(np.diff(trace["bench_psu_power_w"].dropna().to_numpy()) >= 0)  # still a ramp


def test_monsoon_says_clearly_when_its_library_is_missing():
    import importlib.util

    from melt.telemetry.instruments import InstrumentError, MonsoonInstrument

    if importlib.util.find_spec("Monsoon") is not None:
        pytest.skip("the Monsoon library is installed")
    with pytest.raises(InstrumentError, match="pip install Monsoon"):
        MonsoonInstrument().start()


class CountingTransport(LocalTransport):
    """The local transport, counting pulls (every pull is an adb stream on a phone)."""

    def __init__(self, no_tar_dir: Path | None = None):
        self.pulls = 0
        self.no_tar_dir = no_tar_dir

    def pull(self, remote, local):
        self.pulls += 1
        super().pull(remote, local)

    def shell(self, script, **kw):
        if self.no_tar_dir is not None:  # a device without tar: its `tar` fails
            script = f"PATH={self.no_tar_dir}:$PATH; export PATH; {script}"
        return super().shell(script, **kw)


@pytest.mark.parametrize("tar_works", [True, False])
def test_outputs_come_back_in_one_pull_or_file_by_file(tmp_path, tar_works):
    spec = DeviceSpec(name="local", kind="local", workdir=str(tmp_path), telemetry=TelemetrySpec(idle_s=0))
    no_tar = None
    if not tar_works:
        no_tar = tmp_path / "no-tar"
        no_tar.mkdir()
        (no_tar / "tar").write_text("#!/bin/sh\nexit 127\n")
        (no_tar / "tar").chmod(0o755)
    transport = CountingTransport(no_tar)
    session = TelemetrySession(LocalDevice(spec, transport))
    out = session.run([Step("run", ("sh", "-c", "echo hello; echo oops >&2"))])
    assert out.steps[0].stdout == "hello\n" and out.steps[0].stderr == "oops\n"
    assert out.steps[0].returncode == 0
    assert (transport.pulls == 1) if tar_works else (transport.pulls > 3)

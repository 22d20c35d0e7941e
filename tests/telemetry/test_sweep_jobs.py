"""Short jobs back to back on one device: each keeps its own window, record and failure.

The executor lets the previous job's "after" health snapshot stand as the next
job's "before" (one shell call fewer per job); these tests check that nothing
of one job leaks into another: windows, traces, steps, and that a job that
failed leaves nothing behind for the next one. The speed itself is measured in
bench/bench_sweep.py, not here.
"""

from __future__ import annotations

import io

import pandas as pd
import pytest

from melt.config.specs import AdbSpec, DeviceSpec, TelemetrySpec
from melt.errors import TransportError
from melt.frameworks.base import Invocation
from melt.runner import telemetry_executor as te
from melt.runner.telemetry_executor import HEALTH_REUSE_S, TelemetryExecutor, reusable_age


@pytest.fixture(scope="module")
def phone(adb_server):
    from melt.virtual.config import RatesParams, VirtualPhoneConfig
    from melt.virtual.testing import virtual_phone

    with virtual_phone(VirtualPhoneConfig(rates=RatesParams(tick_hz=100, cpu_sample_hz=10, sysfs_hz=20))) as ph:
        ph.serial = adb_server.connect(ph.address)
        yield ph


@pytest.fixture
def device(phone, adb_server):
    from melt.devices.android import AndroidDevice

    spec = DeviceSpec(name="virtual", kind="android", virtual={}, telemetry=TelemetrySpec(idle_s=0),
                      adb=AdbSpec(serial=phone.serial, server_port=adb_server.port))
    dev = AndroidDevice.connect(spec)
    yield dev
    dev.close()


@pytest.fixture
def snapshots(monkeypatch):
    """Counts the health snapshots the executor takes over its own shell call."""
    calls: list[int] = []
    real = te.health_snapshot

    def counted(*a, **kw):
        calls.append(1)
        return real(*a, **kw)

    monkeypatch.setattr(te, "health_snapshot", counted)
    return calls


def nap(seconds: float) -> Invocation:
    return Invocation(("sleep", f"{seconds:g}"), timeout_s=30)


def test_back_to_back_jobs_keep_their_own_windows_and_share_only_the_snapshot(device, snapshots):
    ex = TelemetryExecutor(cooldown=False, health=True)
    naps = (0.3, 0.8, 0.5)
    runs = [ex.execute(device, nap(s)) for s in naps]
    assert len(snapshots) == 1  # the first job's before; the others use the runner's after
    assert "before_taken" not in runs[0].provenance["health"]
    for prev, cur in zip(runs, runs[1:]):
        taken = cur.provenance["health"]["before_taken"]
        assert 0 <= taken["age_s"] <= HEALTH_REUSE_S
        assert cur.provenance["health"]["before"] == prev.provenance["health"]["after"]
        assert cur.provenance["health"]["before"] is not prev.provenance["health"]["after"]
    t0 = [r.provenance["telemetry"]["t0_device_s"] for r in runs]
    assert t0 == sorted(t0) and len(set(t0)) == 3  # each job sampled on its own
    for seconds, run in zip(naps, runs):
        assert seconds <= run.duration_s < seconds + 0.6, (seconds, run.duration_s)  # its own window
        (step,) = run.provenance["steps"]
        assert step["command"] == f"sleep {seconds:g}" and step["returncode"] == 0
        trace = pd.read_parquet(io.BytesIO(run.files["trace.parquet"]))
        assert trace["t_s"].min() >= 0 and trace["t_s"].max() >= step["end_s"] - 0.05
        assert run.metrics["peak_rss_bytes"] > 0 and "temp_max_c" in run.metrics


def test_a_crashing_job_keeps_its_own_failure_and_the_next_job_runs(device, snapshots):
    ex = TelemetryExecutor(cooldown=False, health=True)
    ok = ex.execute(device, nap(0.2))
    crashed = ex.execute(device, Invocation(("sh", "-c", "sleep 0.2; kill -SEGV $$"), timeout_s=30))
    after = ex.execute(device, nap(0.4))
    assert ok.returncode == 0 and after.returncode == 0
    assert crashed.returncode != 0 and crashed.provenance["steps"][0]["returncode"] != 0
    assert "health" in crashed.provenance and "after" in crashed.provenance["health"]
    assert after.provenance["steps"][0]["command"] == "sleep 0.4"
    assert 0.4 <= after.duration_s < 1.0


def test_a_job_that_raised_leaves_no_snapshot_for_the_next(device, snapshots, monkeypatch):
    ex = TelemetryExecutor(cooldown=False, health=True)
    ex.execute(device, nap(0.2))
    session = ex.session(device)
    real_run = session.run

    def lost(*a, **kw):
        raise TransportError("the device went away")

    monkeypatch.setattr(session, "run", lost)
    with pytest.raises(TransportError):
        ex.execute(device, nap(0.2))
    monkeypatch.setattr(session, "run", real_run)
    taken = len(snapshots)
    fresh = ex.execute(device, nap(0.2))
    assert len(snapshots) == taken + 1  # measured again, not the one before the lost job
    assert "before_taken" not in fresh.provenance["health"]


def test_an_old_snapshot_is_taken_again(device, snapshots, monkeypatch):
    ex = TelemetryExecutor(cooldown=False, health=True)
    ex.execute(device, nap(0.1))
    monkeypatch.setattr(te, "HEALTH_REUSE_S", 0.0)
    second = ex.execute(device, nap(0.1))
    assert len(snapshots) == 2 and "before_taken" not in second.provenance["health"]


def test_when_the_previous_after_may_stand_as_before():
    snap = {"temps_c": {"skin#0": 30.0}}
    assert reusable_age(None, 100.0, None) is None
    assert reusable_age((99.0, snap), 100.0, None) == 1.0
    assert reusable_age((99.0, snap), 100.0, {"ok": True, "polls": 1}) == 1.0
    assert reusable_age((100.0 - HEALTH_REUSE_S - 0.1, snap), 100.0, None) is None  # too old
    assert reusable_age((101.0, snap), 100.0, None) is None  # the clock went back
    assert reusable_age((99.0, snap), 100.0, {"ok": True, "polls": 3}) is None  # it waited to cool
    assert reusable_age((99.0, snap), 100.0, {"ok": False, "polls": 1}) is None

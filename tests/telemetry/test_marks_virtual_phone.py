"""Phase windows from llama-bench's own marks on the virtual phone, with ``depth > 0``.

llama-bench fills the context (``-d``) before its first timed repetition,
untimed. The windows melt takes from the marks must hold only the timed work:
the phone's truth log shows its CPU busy inside every window, and the depth
fill lies before the first window.
"""

from __future__ import annotations

import pytest

from melt.config.specs import AdbSpec, DeviceSpec, TelemetrySpec
from melt.frameworks.base import Invocation
from melt.runner.telemetry_executor import TelemetryExecutor
from tests.conftest_models import gemma_model  # noqa: F401

pytestmark = [pytest.mark.adb, pytest.mark.slow]


@pytest.fixture(scope="module")
def phone(adb_server):
    from melt.virtual.config import RatesParams, VirtualPhoneConfig
    from melt.virtual.testing import virtual_phone

    # busy cores measured every 20 ms, so a window's inside is resolved
    with virtual_phone(VirtualPhoneConfig(rates=RatesParams(tick_hz=200, cpu_sample_hz=50, sysfs_hz=50))) as ph:
        ph.serial = adb_server.connect(ph.address)
        yield ph


def test_depth_windows_hold_only_busy_timed_work(phone, adb_server, gemma_model):
    from melt.devices.android import AndroidDevice
    from melt.frameworks.llamacpp.build import host_build

    spec = DeviceSpec(name="virtual", kind="android", virtual={}, telemetry=TelemetrySpec(idle_s=0.5),
                      adb=AdbSpec(serial=phone.serial, server_port=adb_server.port))
    device = AndroidDevice.connect(spec)
    bench = device.stage(host_build().binaries["llama-bench"], category="bin/test")
    model = device.stage(gemma_model, category="models")
    argv = (bench, "-m", model, "-p", "128", "-n", "24", "-d", "256", "-r", "2", "-t", "1", "-o", "jsonl")
    inv = Invocation(argv, env={"LD_LIBRARY_PATH": bench.rsplit("/", 1)[0]}, timeout_s=300)
    e = TelemetryExecutor(health=False).execute(device, inv)
    assert e.returncode == 0, e.stderr[-500:]
    assert e.provenance["phase_source"]["method"] == "process-marks"
    phases = e.provenance["phases"]
    windows = [p for p in phases if p["name"] in ("prefill", "decode")]
    assert [p["name"] for p in windows] == ["prefill", "prefill", "decode", "decode"]
    assert all(p["source"] == "process-marks" for p in windows)
    assert e.metrics["energy_prefill_j"] > 0 and e.metrics["energy_decode_j"] > 0
    assert e.metrics["energy_per_token_prefill_j"] == pytest.approx(e.metrics["energy_prefill_j"] / 256)

    t0 = e.provenance["telemetry"]["t0_device_s"]  # windows are seconds after this realtime instant
    truth = phone.read_truth()
    t, busy = truth["realtime_s"].to_numpy() - t0, truth["busy_cores"].to_numpy()

    def mean_busy(a: float, b: float) -> float:
        inside = (t > a) & (t <= b)
        assert inside.sum() >= 3, (a, b)
        return float(busy[inside].mean())

    edge = 0.05  # the windows' edges are smeared by the 20 ms CPU accounting
    inside = [mean_busy(p["start_s"] + edge, p["end_s"] - edge) for p in windows if p["end_s"] - p["start_s"] > 3 * edge]
    assert len(inside) == len(windows), windows
    idle = [p for p in phases if p["name"] == "idle"][0]
    idle_busy = mean_busy(idle["start_s"] + edge, idle["end_s"] - edge)
    # one thread of llama-bench keeps a core busy in every window (relative to what this
    # machine gives the phone right now: other work may share its cores), the idle baseline not
    reference = sum(inside) / len(inside)
    assert reference > 0.1 and reference > 5 * idle_busy, (inside, idle_busy)
    assert min(inside) > 0.7 * reference, inside
    # before the first window: model load, the warm-up and the untimed 256-token depth fill
    # (about twice a 128-token prefill repetition, busy too), all outside the windows
    load = [p for p in phases if p["name"] == "load"][0]
    first = windows[0]
    assert load["end_s"] == first["start_s"]
    assert load["end_s"] - load["start_s"] > 2 * (first["end_s"] - first["start_s"])
    fill = mean_busy(first["start_s"] - 2 * (first["end_s"] - first["start_s"]), first["start_s"] - edge)
    assert fill > 0.7 * reference, fill

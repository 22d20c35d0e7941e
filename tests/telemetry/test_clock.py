"""Clock offset: a device whose clock is shifted by a known amount, behind random delays."""

from __future__ import annotations

import random
import time

import pytest

from melt.telemetry.clock import estimate_offset, measure_offset, parse_device_time
from tests.helpers import need


class SimulatedLink:
    """Virtual time: each round trip waits a random, asymmetric delay each way."""

    def __init__(self, offset_s: float, seed: int):
        self.now = 1_700_000_000.0
        self.offset_s = offset_s
        self.rng = random.Random(seed)

    def host_clock(self) -> float:
        return self.now

    def read_device(self) -> float:
        self.now += 0.002 + self.rng.expovariate(1 / 0.015)  # request: spawn + transport
        reading = self.now + self.offset_s
        self.now += 0.0005 + self.rng.expovariate(1 / 0.004)  # reply
        return reading


@pytest.mark.parametrize("offset_s", [0.0, 0.137, -3.25, 4321.0])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_min_rtt_estimate_is_within_5_ms_of_an_injected_offset(offset_s, seed):
    link = SimulatedLink(offset_s, seed)
    est = measure_offset(link.read_device, n=16, host_clock=link.host_clock)
    assert abs(est.offset_s - offset_s) < 0.005
    assert abs(est.offset_s - offset_s) <= est.uncertainty_s
    assert est.probes == 16


class ShiftedClockTransport:
    """Wraps a transport: device clock readings come back shifted, after random delays."""

    def __init__(self, inner, offset_s: float, seed: int = 7):
        self.inner = inner
        self.name = inner.name
        self.offset_s = offset_s
        self.rng = random.Random(seed)

    def run(self, argv, **kw):
        from melt.transports.base import CommandResult

        time.sleep(self.rng.uniform(0.0, 0.004))
        r = self.inner.run(argv, **kw)
        if "EPOCHREALTIME" in " ".join(argv):
            shifted = f"{parse_device_time(r.stdout) + self.offset_s:.6f}\n"
            r = CommandResult(r.argv, r.returncode, shifted, r.stderr, r.duration_s)
        time.sleep(self.rng.uniform(0.0, 0.004))
        return r

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_session_measures_an_injected_offset_through_a_transport(tmp_path):
    from melt.config.specs import DeviceSpec
    from melt.devices.local import LocalDevice
    from melt.telemetry.session import TelemetrySession
    from melt.transports.local import LocalTransport

    injected = 12.345
    device = LocalDevice(DeviceSpec(name="shifted", kind="local", workdir=str(tmp_path)),
                         ShiftedClockTransport(LocalTransport(), injected))  # type: ignore[arg-type]
    session = TelemetrySession(device)
    need(session.clock == "realtime", "a shell with $EPOCHREALTIME (bash >= 5 or mksh)")
    est = session.clock_offset(n=12)
    assert abs(est.offset_s - injected) < 0.005
    assert est.uncertainty_s < 0.05


def test_parse_device_time_formats():
    assert parse_device_time("1700000000.250000\n") == pytest.approx(1700000000.25)
    assert parse_device_time("1700000000,250000") == pytest.approx(1700000000.25)
    assert parse_device_time("1700000000250000000") == pytest.approx(1700000000.25)
    assert parse_device_time("12345.67 23456.78\n") == pytest.approx(12345.67)
    with pytest.raises(ValueError, match="not a clock reading: 'date: invalid option'"):
        parse_device_time("date: invalid option")


def test_estimate_needs_a_usable_probe():
    with pytest.raises(ValueError, match="no usable clock probe"):
        estimate_offset([(2.0, 5.0, 1.0)])

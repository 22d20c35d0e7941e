"""The energy error model against a simulated gauge: does the truth land inside melt's interval?

The virtual phone's own gauge (:class:`melt.virtual.gauge.FuelGauge`) reads a
known power trace (busy and idle stretches of random lengths), a 50 Hz
sampler reads the gauge, and :mod:`melt.telemetry.uncertainty` gets only
what a sampler would see. Seeded: the same phases every run.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from melt.telemetry.uncertainty import (
    Estimate,
    gauge_energy,
    gauge_readings,
    noise_from_differences,
    noise_sd_w,
)
from melt.virtual.config import GaugeParams
from melt.virtual.gauge import FuelGauge

TICK = 0.01
VOLTS = 3.9


def simulate(gauge: GaugeParams, segments: list[tuple[float, float]], seed: int = 0):
    """(t, true cumulative J, sampled t, sampled power W, sampled raw current) for power segments."""
    g = FuelGauge(gauge, sign=-1)
    rng = random.Random(seed)
    t = 0.0
    times, energy, total = [0.0], [0.0], 0.0
    st, sp, sk = [], [], []
    next_sample = 0.0
    factor = 1e-3 if gauge.unit == "mA" else 1e-6
    for duration, watts in segments:
        end = t + duration
        while t < end - 1e-12:
            w = watts * (1 + 0.05 * rng.uniform(-1, 1))  # the load is never quite flat
            t += TICK
            total += w * TICK
            times.append(t)
            energy.append(total)
            g.feed(t, TICK, w / VOLTS, VOLTS)
            if t >= next_sample:
                next_sample += 0.02  # the sampler, 50 Hz
                amps = -g.current_raw * factor
                st.append(t)
                sp.append(amps * g.voltage_uv * 1e-6)
                sk.append(g.current_raw)
    return np.array(times), np.array(energy), np.array(st), np.array(sp), np.array(sk)


def random_segments(rng: random.Random, n: int) -> list[tuple[float, float]]:
    segs = [(5.0, 0.6)]  # idle baseline first
    for _ in range(n):
        segs.append((rng.choice([0.3, 1.5, 4.0, 12.0, 15.0]) * rng.uniform(0.8, 1.2),
                     rng.choice([0.6, 1.7, 2.8, 3.9])))
    segs.append((4.0, 0.6))
    return segs


@pytest.mark.parametrize("gauge, narrow", [
    (GaugeParams(update_period_s=1.0, averaging_s=1.0, noise_ua=5000, gain_error_pct=0.5, unit="mA", seed=3), True),
    (GaugeParams(update_period_s=0.25, averaging_s=0.0, noise_ua=3000, gain_error_pct=-0.7, unit="uA", seed=4), True),
    # a 2 s gauge: honest, but 10-20 s phases get intervals of 5-6%
    (GaugeParams(update_period_s=2.0, averaging_s=2.0, noise_ua=8000, gain_error_pct=0.8, unit="mA", seed=5), False),
])
def test_truth_inside_the_interval_for_95_percent_of_phases(gauge, narrow):
    rng = random.Random(11)
    segs = random_segments(rng, 40)
    tt, cum, st, sp, sk = simulate(gauge, segs, seed=gauge.seed)
    r = gauge_readings(st, sp, sk)
    noise = noise_sd_w(r, 0.5, 5.0) or noise_from_differences(r)
    assert noise > 0
    inside, widths, below = 0, [], 0
    edges = np.cumsum([0.0] + [d for d, _ in segs])
    phases = list(zip(edges[1:-2], edges[2:-1]))  # the busy/idle stretches between the baselines
    for (a, b), (_, watts) in zip(phases, segs[1:-1]):
        est = gauge_energy(r, a, b, period_s=gauge.update_period_s, averaging_s=gauge.averaging_s,
                           noise_w=noise, quantum_w=(1e-3 if gauge.unit == "mA" else 1e-6) * VOLTS,
                           gain_pct=1.0, edge_s=0.001)
        truth = float(np.interp(b, tt, cum) - np.interp(a, tt, cum))
        inside += abs(est.value - truth) <= est.u95
        below += est.below
        if b - a >= 10.0 and watts > 1.0:  # inference-like: busy for 10 s or more
            widths.append(est.u95 / est.value)
    assert inside >= 0.95 * len(phases), (inside, len(phases))
    assert widths and (max(widths) <= 0.05 or not narrow), widths
    assert below > 0  # the 0.3 s stretches are below this gauge's resolution


def test_an_ideal_gauge_gives_a_narrow_interval():
    # ideal on purpose: with no noise and no gain error, what is left is the method's own error
    gauge = GaugeParams.ideal(update_period_s=0.01, unit="uA")
    segs = [(3.0, 0.6), (12.0, 2.5), (3.0, 0.6)]
    tt, cum, st, sp, sk = simulate(gauge, segs)
    r = gauge_readings(st, sp, sk)
    est = gauge_energy(r, 3.0, 15.0, period_s=0.02, averaging_s=0.0, noise_w=0.0, gain_pct=0.0)
    truth = float(np.interp(15.0, tt, cum) - np.interp(3.0, tt, cum))
    assert abs(est.value - truth) <= est.u95 < 0.005 * truth


def test_estimates_add_bounds_linearly_and_noise_in_quadrature():
    a, b = Estimate(10.0, 0.2, 0.3), Estimate(5.0, 0.1, 0.4)
    s = a + b
    assert s.value == 15.0 and s.bound == pytest.approx(0.3) and s.sd == pytest.approx(0.5)
    assert s.u95 == pytest.approx(0.3 + 1.96 * 0.5)
    assert a.scaled(-0.5).value == -5.0 and a.scaled(-0.5).bound == pytest.approx(0.1)

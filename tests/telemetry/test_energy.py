"""Energy integration and unit normalisation on synthetic series with known integrals."""

from __future__ import annotations

import numpy as np
import pytest

from melt.telemetry.energy import (
    WindowError,
    cumulative_between,
    discharge_current_a,
    guess_current_unit,
    integrate,
    mean_over,
    value_at,
    voltage_v,
)


def test_linear_power_is_integrated_exactly_with_edges_between_samples():
    t = np.arange(0.0, 10.0001, 0.02)
    p = 1.0 + 0.5 * t  # W
    # window edges fall between samples: 1.013 .. 7.991
    a, b = 1.013, 7.991
    exact = (b - a) + 0.25 * (b * b - a * a)
    assert integrate(t, p, a, b) == pytest.approx(exact, rel=1e-12)


def test_adjacent_windows_add_up():
    rng = np.random.default_rng(1)
    t = np.sort(rng.uniform(0, 5, 300))
    p = rng.uniform(0.5, 4.0, 300)
    a, m, b = t[3] + 0.001, 2.3456, t[-4] - 0.002
    assert integrate(t, p, a, m) + integrate(t, p, m, b) == pytest.approx(integrate(t, p, a, b), rel=1e-12)


def test_sine_converges_to_the_analytic_integral():
    t = np.linspace(0, 2.0, 2001)
    p = 2.0 + np.sin(2 * np.pi * t)
    a, b = 0.1234, 1.8765
    exact = 2 * (b - a) - (np.cos(2 * np.pi * b) - np.cos(2 * np.pi * a)) / (2 * np.pi)
    assert integrate(t, p, a, b) == pytest.approx(exact, rel=1e-6)


def test_nan_samples_are_skipped_and_mean_is_time_weighted():
    t = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    p = np.array([1.0, np.nan, 1.0, 3.0, 3.0])
    assert integrate(t, p, 0.0, 2.0) == pytest.approx(2.0)
    assert mean_over(t, p, 3.0, 4.0) == pytest.approx(3.0)
    assert value_at(t, p, 2.5) == pytest.approx(2.0)


def test_windows_outside_the_samples_are_refused_not_extrapolated():
    t, p = np.array([1.0, 2.0, 3.0]), np.array([1.0, 1.0, 1.0])
    with pytest.raises(WindowError):
        integrate(t, p, 0.5, 2.0)
    with pytest.raises(WindowError):
        integrate(t, p, 2.0, 3.5)
    with pytest.raises(WindowError):
        integrate(t, p, 2.5, 2.0)
    assert integrate(t, p, 2.0, 2.0) == 0.0


def test_cumulative_counter_difference_is_interpolated():
    t = np.array([0.0, 1.0, 2.0])
    energy = np.array([10.0, 12.0, 16.0])
    assert cumulative_between(t, energy, 0.5, 1.5) == pytest.approx(13.0 - 11.0 + 1.0)


@pytest.mark.parametrize(
    "raw, unit, sign, amps",
    [
        (-250000, "uA", "negative-discharging", 0.25),
        (250000, "uA", "positive-discharging", 0.25),
        (-250, "mA", "negative-discharging", 0.25),
        (250, "mA", "positive-discharging", 0.25),
        (300000, "uA", "negative-discharging", -0.3),  # charging
    ],
)
def test_current_units_and_signs(raw, unit, sign, amps):
    assert discharge_current_a([raw], unit=unit, sign=sign)[0] == pytest.approx(amps)


def test_voltage_units_and_bad_units():
    assert voltage_v([3850000], unit="uV")[0] == pytest.approx(3.85)
    assert voltage_v([3850], unit="mV")[0] == pytest.approx(3.85)
    with pytest.raises(ValueError, match="unknown voltage unit 'kV'"):
        voltage_v([1], unit="kV")
    with pytest.raises(ValueError, match="unknown current sign 'sideways'"):
        discharge_current_a([1], sign="sideways")


def test_current_unit_is_guessed_from_magnitudes():
    assert guess_current_unit([-350, -420, -390]) == "mA"
    assert guess_current_unit([-350000, -420000]) == "uA"
    assert guess_current_unit([]) == "uA"


def test_adaptive_repetition_stops_when_the_interval_is_narrow():
    from melt.telemetry.repeat import needs_more

    assert needs_more([10.0, 10.1])  # below min_n
    assert not needs_more([10.0, 10.1, 9.9, 10.05])
    assert needs_more([10.0, 14.0, 6.0])
    assert not needs_more([10.0, 14.0, 6.0] * 7, max_n=20)

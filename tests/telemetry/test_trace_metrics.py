"""Runner output -> trace -> phases -> metrics, on synthetic files (no device)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from melt.config.specs import TelemetrySpec
from melt.telemetry.channels import plan_from_listing
from melt.telemetry.metrics import job_metrics
from melt.telemetry.phases import StepResult, derive_phases
from melt.telemetry.throttle import throttled_intervals
from melt.telemetry.trace import parse_samples

LISTING = """\
supply /sys/class/power_supply/battery Battery Discharging
supply /sys/class/power_supply/usb USB ?
battery current_now -400000
battery voltage_now 4000000
battery capacity 80
battery temp 250
battery status Discharging
/sys/class/thermal/thermal_zone0/type:cpu-0-0
/sys/class/thermal/thermal_zone1/type:skin
cpufreq /sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq
"""


def make_plan(**kw):
    return plan_from_listing(LISTING, TelemetrySpec(**kw), battery_dir="/sys/class/power_supply/battery")


def test_plan_normalises_sign_and_names_columns():
    plan = make_plan()
    assert [c.column for c in plan.fast] == ["current_ua", "voltage_uv"]
    assert plan.fast[0].factor == -1.0  # negative while discharging -> positive column
    assert plan.current_sign == "negative-discharging"
    cols = [c.column for c in plan.slow]
    assert cols == ["battery_pct", "battery_temp_c", "usb_online", "temp_cpu_0_0_c", "temp_skin_c",
                    "cpufreq_cpu0_khz", "cpufreq_max_cpu0_khz"]
    assert plan.mark_files == ("/sys/class/power_supply/battery/status", "/sys/class/power_supply/usb/online")
    positive = plan_from_listing(LISTING.replace("-400000", "400000"), TelemetrySpec(),
                                 battery_dir="/sys/class/power_supply/battery")
    assert positive.fast[0].factor == 1.0 and positive.current_sign == "positive-discharging"


def test_current_unit_is_detected_when_not_demanded():
    from melt.config.specs import BatterySpec

    ma = LISTING.replace("-400000", "-400")
    plan = plan_from_listing(ma, TelemetrySpec(), battery_dir="/sys/class/power_supply/battery")
    assert plan.current_unit == "mA" and plan.fast[0].factor == -1000.0  # 400 mA, not 0.4 mA
    assert make_plan().current_unit == "uA"
    demanded = plan_from_listing(ma, TelemetrySpec(battery=BatterySpec(current_unit="uA")),
                                 battery_dir="/sys/class/power_supply/battery")
    assert demanded.current_unit == "uA" and demanded.fast[0].factor == -1.0


def test_only_compute_cooling_devices_are_sampled():
    listing = LISTING + ("cooling /sys/class/thermal/cooling_device0/cur_state thermal-cpufreq-0\n"
                         "cooling /sys/class/thermal/cooling_device1/cur_state battery\n"
                         "cooling /sys/class/thermal/cooling_device2/cur_state modem_tx\n")
    plan = plan_from_listing(listing, TelemetrySpec(), battery_dir="/sys/class/power_supply/battery")
    assert [c.column for c in plan.slow if c.column.startswith("cooling_")] == ["cooling_0_state"]


def test_no_battery_says_why():
    plan = plan_from_listing("supply /sys/class/power_supply/AC Mains ?\n", TelemetrySpec(), battery_dir=None)
    assert not plan.has_power
    assert "no battery" in plan.missing["power"]


def synthetic_run(power_fn, *, hz=50.0, t0=1000.0, duration=6.0, cap_drop_at=None):
    plan = make_plan()
    marks = [(t0, "begin"), (t0 + 0.01, "idle_start"), (t0 + 1.0, "idle_end"),
             (t0 + 1.0, "prefill_start"), (t0 + 3.0, "prefill_end"),
             (t0 + 3.0, "decode_start"), (t0 + 5.5, "decode_end"), (t0 + 5.5, "end")]
    lines = []
    ticks = np.arange(t0 + 0.003, t0 + duration, 1 / hz)
    for i, t in enumerate(ticks):
        rel = t - t0
        watts = power_fn(rel)
        volts = 4.0
        amps = watts / volts
        lines.append(f"F {t:.6f} {-amps * 1e6:.0f} {volts * 1e6:.0f} {2560 + i}")
        if i % 5 == 0:
            cap = 1_200_000 if cap_drop_at is not None and rel >= cap_drop_at else 2_400_000
            lines.append(f"S {t:.6f} 80 {250 + int(rel * 10)} 0 {30000 + int(rel * 1000)} 25500 "
                         f"{cap} {cap} {100 + i} 0 {50 + i} {1000 + i} 0 0 0 0")
    lines.append(f"H {ticks[-1]:.6f} 1234 20480")
    lines.append(f"C {ticks[-1]:.6f} 3 2 0 0 {len(ticks)}")
    samples = "\n".join(lines) + "\n"
    marks_text = "".join(f"{t:.6f} {n}\n" for t, n in marks)
    meta = "clock=realtime\npagesize=4096\nclk_tck=100\n"
    return parse_samples(samples, marks_text, meta, plan)


def steps_of(trace, outputs=("", "")):
    return [StepResult(0, "prefill", trace.mark("prefill_start"), trace.mark("prefill_end"), 0, outputs[0], ""),
            StepResult(1, "decode", trace.mark("decode_start"), trace.mark("decode_end"), 0, outputs[1], "")]


def test_trace_columns_units_and_rate():
    trace = synthetic_run(lambda t: 2.0)
    df = trace.frame
    assert list(df.columns[:6]) == ["t_s", "power_w", "current_ua", "voltage_uv", "battery_pct", "battery_temp_c"]
    assert df["power_w"].dropna().iloc[0] == pytest.approx(2.0, rel=1e-4)
    assert df["current_ua"].iloc[0] > 0
    assert df["temp_cpu_0_0_c"].dropna().iloc[0] == pytest.approx(30.0, abs=0.01)
    assert df["battery_temp_c"].dropna().iloc[0] == pytest.approx(25.0)
    assert df["rss_bytes"].iloc[0] == 2560 * 4096
    assert trace.sample_rate_hz == pytest.approx(50.0, rel=1e-3)
    assert trace.peak_hwm_bytes == 20480 * 1024
    assert trace.sampler_cpu_pct == pytest.approx(100 * 0.05 / (df["t_s"].iloc[-1] - df["t_s"].iloc[0]), rel=0.01)
    assert df["cpu_util_pct"].dropna().iloc[0] == pytest.approx(100 * 2 / 3, rel=1e-6)


def test_phase_energy_gross_net_and_per_token():
    # idle 1 W; prefill 3 W; decode ramps 2 -> 4.5 W
    def power(t):
        if t < 1.0:
            return 1.0
        if t < 3.0:
            return 3.0
        return 2.0 + (t - 3.0)

    trace = synthetic_run(power)
    bench = [json.dumps([{"n_prompt": 64, "n_gen": 0, "avg_ts": 100.0, "stddev_ts": 1.0,
                          "samples_ns": [500_000_000, 500_000_000], "model_type": "x"}]),
             json.dumps([{"n_prompt": 0, "n_gen": 16, "avg_ts": 20.0, "stddev_ts": 1.0,
                          "samples_ns": [1_000_000_000, 1_000_000_000], "model_type": "x"}])]
    plan = derive_phases((trace.mark("idle_start"), trace.mark("idle_end")), steps_of(trace, bench))
    names = [p.name for p in plan.phases]
    assert names == ["idle", "load", "prefill", "decode"]
    prefill = plan.phases[2]
    assert prefill.end_s == pytest.approx(3.0) and prefill.start_s == pytest.approx(2.0)
    assert plan.tokens == {"prefill": 128.0, "decode": 32.0}
    r = job_metrics(trace.frame, plan, (1.0, 5.5))
    m = r.metrics
    # a step in power between two samples is placed within half a sample interval:
    # the truth lies inside each interval, and the intervals stay narrow
    decode_exact = 2 * 2.5 + 0.5 * 2.5 ** 2 - (2 * 0.5 + 0.5 * 0.5 ** 2)  # 3.5..5.5 s of 2+(t-3)
    for name, truth in (("idle_power_w", 1.0), ("energy_prefill_j", 3.0), ("energy_decode_j", decode_exact),
                        ("energy_prefill_j_net", 3.0 - 1.0)):
        assert abs(m[name] - truth) <= m[f"{name}_u95"], (name, m[name], truth, m[f"{name}_u95"])
        assert m[f"{name}_u95"] < 0.06 * truth, name
    assert not r.resolution
    assert m["energy_per_token_prefill_j"] == pytest.approx(m["energy_prefill_j"] / 128)
    assert m["energy_per_token_decode_j_net"] == pytest.approx(
        (m["energy_decode_j"] - 2.0 * m["idle_power_w"]) / 32)
    assert m["temp_start_c"] <= m["temp_max_c"] and m["temp_end_c"] == pytest.approx(25.0 + 5.5, abs=0.2)
    assert m["battery_drain_pct"] == 0.0
    assert m["throttled"] == 0


def test_generate_timings_split_one_run_step():
    stderr = ("common_perf_print:        load time =     300.00 ms\n"
              "common_perf_print: prompt eval time =     500.00 ms /    20 tokens\n"
              "common_perf_print:        eval time =    1000.00 ms /    31 runs\n"
              "common_perf_print:       total time =    1900.00 ms /    51 tokens\n")
    step = StepResult(0, "run", 1.0, 5.5, 0, "", stderr)
    plan = derive_phases(None, [step])
    by = {p.name: p for p in plan.phases}
    assert by["decode"].end_s == 5.5 and by["decode"].start_s == pytest.approx(4.5)
    assert by["prefill"].start_s == pytest.approx(4.0)
    assert by["load"].start_s == 1.0
    assert plan.tokens == {"prefill": 20.0, "decode": 31.0}


def test_frequency_cap_drop_is_a_throttled_interval():
    trace = synthetic_run(lambda t: 2.0, cap_drop_at=3.5)
    intervals = throttled_intervals(trace.frame, start_s=1.0, end_s=5.5)
    assert len(intervals) == 1
    assert 3.5 <= intervals[0].start_s < 3.7 and intervals[0].end_s <= 5.5
    plan = derive_phases(None, steps_of(trace))
    assert job_metrics(trace.frame, plan, (1.0, 5.5)).metrics["throttled"] == 1


def test_busy_cpu_at_low_frequency_without_caps():
    frame = pd.DataFrame({"t_s": [0, 1, 2, 3], "cpufreq_cpu0_khz": [2.4e6, 2.4e6, 1.2e6, 1.2e6],
                          "cpu_util_pct": [100, 100, 100, 10]})
    assert [(i.start_s, i.end_s) for i in throttled_intervals(frame)] == [(2.0, 2.0)]


def test_missing_power_gives_reasons_not_zeros():
    frame = pd.DataFrame({"t_s": np.linspace(0, 3, 31), "rss_bytes": np.full(31, 1e6)})
    plan = derive_phases(None, [StepResult(0, "decode", 0.5, 2.5, 0, "", "")])
    r = job_metrics(frame, plan, (0.5, 2.5), power_missing="no battery fuel gauge on this device")
    assert "energy_decode_j" not in r.metrics
    assert r.missing["energy_decode_j"] == "no battery fuel gauge on this device"
    assert r.metrics["peak_rss_bytes"] == 1e6


def test_truncated_lines_are_dropped():
    plan = make_plan()
    samples = "F 1.0 -1000 4000000 10\nF 1.02 -1000\nS 1.0 80\n"
    trace = parse_samples(samples, "1.0 begin\n", "", plan)
    assert len(trace.frame) == 1
    with pytest.raises(ValueError, match="no begin mark"):
        parse_samples(samples, "", "", plan)


def test_odpm_counters_give_phase_energy():
    from melt.telemetry.odpm import phase_energy

    markdata = ("@ 10.0 decode_start\nt=1000\nCH0(T=1000)[S10M_VDD_TPU], 5000000\nCH1(T=1000)[VSYS_PWR_DISPLAY], 1000000\n"
                "@ 12.0 decode_end\nt=3000\nCH0(T=3000)[S10M_VDD_TPU], 7500000\nCH1(T=3000)[VSYS_PWR_DISPLAY], 1500000\n")
    metrics, rails = phase_energy(markdata, ["decode", "prefill"])
    assert metrics["odpm_energy_decode_j"] == pytest.approx(3.0)
    assert metrics["odpm_soc_energy_decode_j"] == pytest.approx(2.5)  # the TPU rail, not the display
    assert 0 < metrics["odpm_energy_decode_j_u95"] < 0.03 * 3.0  # fresh counters: the accuracy only
    assert "odpm_energy_prefill_j" not in metrics
    assert rails["decode"]["S10M_VDD_TPU"] == pytest.approx(2.5)


def test_stale_odpm_counters_are_corrected_and_widen_the_interval():
    from melt.telemetry.odpm import phase_energy

    # 2 W inside the phase; the end counters were refreshed 100 ms before the end mark
    markdata = ("@ 100.0 decode_start\nt=50000\nCH0(T=50000)[S4M_VDD_CPUCL0], 1000000\nuptime=50.00\n"
                "@ 110.0 decode_end\nt=59900\nCH0(T=59900)[S4M_VDD_CPUCL0], 20800000\nuptime=60.00\n")
    m, _ = phase_energy(markdata, ["decode"])
    assert m["odpm_energy_decode_j"] == pytest.approx(19.8 + 0.1 * 19.8 / 10, rel=1e-6)
    assert m["odpm_energy_decode_j_u95"] > 0.1 * 2 * 0.5  # at least half the stale slice at 2 W


def test_a_slow_counter_read_is_not_counted_as_missing_energy():
    from melt.telemetry.odpm import phase_energy

    # 2 W; counters refreshed 20 ms before each mark, but reading them took 400 ms (a busy
    # device): dated by the uptime read before them, the slices are 20 ms, not 420 ms
    markdata = ("@ 100.0 decode_start\nuptime_before=50.02\nt=50000\nCH0(T=50000)[S4M_VDD_CPUCL0], 1000000\n"
                "uptime=50.42\n"
                "@ 110.0 decode_end\nuptime_before=60.02\nt=60000\nCH0(T=60000)[S4M_VDD_CPUCL0], 21000000\n"
                "uptime=60.42\n")
    m, _ = phase_energy(markdata, ["decode"])
    assert m["odpm_energy_decode_j"] == pytest.approx(20.0, rel=1e-6)  # the slices cancel at equal power
    assert m["odpm_energy_decode_j_u95"] < 0.5 / 100 * 20 + 2 * 0.03 * 2  # gain + two 20 ms slices at most
    # a counter refreshed during the read (after the mark) holds energy past it: taken away
    late = markdata.replace("t=60000\nCH0(T=60000)", "t=60100\nCH0(T=60100)").replace("21000000", "21200000")
    m2, _ = phase_energy(late, ["decode"])
    assert m2["odpm_energy_decode_j"] == pytest.approx(20.2 - (0.08 + 0.02) * 20.2 / 10, rel=1e-6)


def test_tegrastats_lines_become_rail_columns():
    from melt.telemetry.tegrastats import tegrastats_frame

    line = ("RAM 2000/7000MB (lfb 1x4MB) CPU [10%@1900,20%@1900] GR3D_FREQ 50% "
            "VDD_IN 5000mW/5000mW VDD_CPU_GPU_CV 1200mW/1200mW")
    df = tegrastats_frame(f"{line}\n{line}\n", 100)
    assert list(df["t_s"]) == pytest.approx([0.1, 0.2])
    assert df["rail_vdd_in_w"].iloc[0] == pytest.approx(5.0)
    assert df["gpu_util_pct"].iloc[0] == 50


def test_a_policy_cap_below_the_hardware_maximum_is_not_throttling():
    frame = pd.DataFrame({"t_s": [0.0, 1.0, 2.0], "cpufreq_max_cpu0_khz": [1.8e6, 1.8e6, 1.8e6]})
    # the core rested at 1.8 GHz (its hardware maximum is 2.4 GHz): nothing dropped
    assert throttled_intervals(frame, reference={"cpufreq_max_cpu0_khz": 1.8e6}) == []
    assert len(throttled_intervals(frame, reference={"cpufreq_max_cpu0_khz": 2.4e6})) == 1


def test_throttled_is_absent_with_a_reason_without_a_signal():
    frame = pd.DataFrame({"t_s": np.linspace(0, 3, 31), "rss_bytes": np.full(31, 1e6)})
    plan = derive_phases(None, [StepResult(0, "decode", 0.5, 2.5, 0, "", "")])
    r = job_metrics(frame, plan, (0.5, 2.5))
    assert "throttled" not in r.metrics and "no throttling signal" in r.missing["throttled"]


def test_charging_is_read_from_marks_counter_and_current():
    from melt.telemetry.charging import charging_state

    frame = pd.DataFrame({"t_s": [0.0, 1.0, 2.0], "current_ua": [-500000.0, -480000.0, -490000.0],
                          "charge_counter_uah": [3000000.0, np.nan, 3000300.0], "usb_online": [1.0, np.nan, 1.0]})
    marks = ("10.0 decode_start /sys/class/power_supply/battery/status Charging\n"
             "10.0 decode_start /sys/class/power_supply/usb/online 1\n")
    state = charging_state(frame, marks, (0.0, 2.0))
    assert state["charging"] and state["usb_online"] == 1 and len(state["evidence"]) == 3
    quiet = frame.assign(current_ua=[400000.0] * 3, charge_counter_uah=[3000300.0, np.nan, 3000000.0])
    cut = charging_state(quiet, marks.replace("Charging", "Not charging"), (0.0, 2.0))
    assert not cut["charging"] and "did not charge" in cut["note"]


def test_battery_drain_comes_from_the_charge_counter():
    from melt.telemetry.metrics import _battery_drain

    frame = pd.DataFrame({"t_s": [0.0, 5.0], "battery_pct": [80.0, 80.0],
                          "charge_counter_uah": [3600000.0, 3599100.0], "charge_full_uah": [4500000.0, np.nan]})
    drain = _battery_drain(frame)
    assert drain["battery_drain_uah"] == 900.0 and drain["battery_drain_pct"] == pytest.approx(0.02)

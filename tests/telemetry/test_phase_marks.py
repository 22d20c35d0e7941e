"""Phase windows from the inference process's own marks (pure: synthetic steps)."""

from __future__ import annotations

import json

from melt.parsers import parse
from melt.parsers.marks import mark_windows, parse_marks
from melt.telemetry.phases import StepResult, derive_phases

T0 = 1_764_000_000.0  # the trace's origin on the device's realtime clock
BOOT0 = 5_000.0  # the same instant on the boottime clock


def mark(name: str, t: float, extra: str = "") -> str:
    return f"melt-mark {name} realtime={T0 + t:.6f} boottime={BOOT0 + t:.6f}{extra}\n"


def bench_step(marks: str, start=1.0, end=9.0) -> StepResult:
    rows = [{"n_prompt": 128, "n_gen": 0, "n_depth": 512, "avg_ts": 300.0, "samples_ns": [400_000_000] * 2},
            {"n_prompt": 0, "n_gen": 64, "n_depth": 512, "avg_ts": 60.0, "samples_ns": [1_000_000_000] * 2}]
    stdout = "".join(json.dumps(r) + "\n" for r in rows)
    return StepResult(0, "run", start, end, 0, stdout, "llama log line\n" + marks)


# llama-bench -p 128 -n 64 -d 512 -r 2: each repetition refills the context first (untimed)
DEPTH_MARKS = "".join([
    mark("prefill_start", 2.0, " test=1 rep=1"), mark("prefill_end", 2.4, " test=1 rep=1 tokens=128"),
    mark("prefill_start", 3.2, " test=1 rep=2"), mark("prefill_end", 3.6, " test=1 rep=2 tokens=128"),
    mark("decode_start", 5.0, " test=2 rep=1"), mark("decode_end", 6.0, " test=2 rep=1 tokens=64"),
    mark("decode_start", 7.0, " test=2 rep=2"), mark("decode_end", 8.0, " test=2 rep=2 tokens=64"),
])


def test_marks_parse_with_both_clocks_and_their_keys():
    marks = parse_marks("noise\n" + DEPTH_MARKS + "melt-mark broken realtime=x\nmelt-mark\n")
    assert len(marks) == 8
    assert marks[1] == {"name": "prefill_end", "realtime_s": T0 + 2.4, "boottime_s": BOOT0 + 2.4,
                        "test": 1, "rep": 1, "tokens": 128}
    assert parse(DEPTH_MARKS)[0] == "melt-marks"


def test_windows_pair_by_test_and_repetition_on_either_clock():
    marks = parse_marks(DEPTH_MARKS)
    real = mark_windows(marks, "realtime")
    boot = mark_windows(marks, "boottime")
    assert [(w["phase"], round(w["end"] - w["start"], 6)) for w in real] == \
        [("prefill", 0.4), ("prefill", 0.4), ("decode", 1.0), ("decode", 1.0)]
    assert [round(w["start"] - T0, 6) for w in real] == [round(w["start"] - BOOT0, 6) for w in boot]


def test_a_completion_decode_starts_at_the_prefill_end_and_an_open_window_is_dropped():
    text = mark("prefill_start", 1.0) + mark("prefill_end", 1.5, " tokens=9") + mark("decode_end", 3.0, " tokens=31")
    windows = mark_windows(parse_marks(text))
    assert [(w["phase"], w["start"] - T0, w["end"] - T0, w["tokens"]) for w in windows] == \
        [("prefill", 1.0, 1.5, 9), ("decode", 1.5, 3.0, 31)]
    died = mark("prefill_start", 1.0) + mark("prefill_end", 1.5) + mark("decode_start", 1.5)
    assert [w["phase"] for w in mark_windows(parse_marks(died))] == ["prefill"]


def test_depth_windows_cover_only_the_timed_repetitions():
    plan = derive_phases((0.1, 0.9), [bench_step(DEPTH_MARKS)], clock="realtime", t0_device_s=T0)
    assert plan.method == "process-marks"
    got = [(p.name, round(p.start_s, 6), round(p.end_s, 6), p.source) for p in plan.phases]
    assert got == [("idle", 0.1, 0.9, "marks"), ("load", 1.0, 2.0, "marks"),
                   ("prefill", 2.0, 2.4, "process-marks"), ("prefill", 3.2, 3.6, "process-marks"),
                   ("decode", 5.0, 6.0, "process-marks"), ("decode", 7.0, 8.0, "process-marks")]
    assert plan.tokens == {"prefill": 256, "decode": 128}
    # the uptime clock reads the boottime stamps
    same = derive_phases(None, [bench_step(DEPTH_MARKS)], clock="uptime", t0_device_s=BOOT0)
    assert [(round(p.start_s, 6), round(p.end_s, 6)) for p in same.phases] == [g[1:3] for g in got[1:]]


def test_without_marks_the_walk_back_is_the_labelled_fallback():
    plan = derive_phases(None, [bench_step("")], clock="realtime", t0_device_s=T0)
    assert plan.method == "walk-back"
    assert {p.source for p in plan.phases if p.name in ("prefill", "decode")} == {"llama-bench-samples"}
    # the walk-back cannot see the context filling: its windows differ from the marked ones
    decode = [p for p in plan.phases if p.name == "decode"][0]
    assert (round(decode.start_s, 6), round(decode.end_s, 6)) == (7.0, 9.0)


def test_marks_outside_the_step_are_ignored():
    stale = mark("prefill_start", 20.0) + mark("prefill_end", 21.0)
    plan = derive_phases(None, [bench_step(stale)], clock="realtime", t0_device_s=T0)
    assert plan.method == "walk-back"

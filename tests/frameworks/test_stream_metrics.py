"""Metrics, phases and tables of streamed llama-server jobs, from hand-made transcripts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from melt.errors import JobFailed
from melt.frameworks.llamacpp.stream_metrics import stream_metrics, token_rate_series, turn_rows
from melt.runner.served import served_plan, served_tables
from melt.telemetry.phases import StepResult


def request(sent: float, first: float, gap: float, n: int, *, prompt_n: int = 10, ctx: int = 10,
            cache_n: int = 0) -> dict:
    times = [first + i * gap for i in range(n)]
    return {"sent_s": sent, "token_times_s": times, "done_s": times[-1] + 0.001, "text": "x",
            "timings": {"prompt_n": prompt_n, "prompt_ms": 1000 * (first - sent) * 0.9,
                        "predicted_n": n, "predicted_ms": 1000 * gap * n, "cache_n": cache_n},
            "tokens_evaluated": ctx, "tokens_cached": ctx, "stop_type": "limit"}


def transcript(**kw) -> dict:
    base = {"kind": "serve", "ready_s": 99.0, "transport": {"rtt_ms_min": 0.8}}
    return {**base, **kw}


def test_serve_metrics_are_measured_from_arrival_times():
    t = transcript(requests=[request(100.0, 100.2, 0.05, 11), request(101.0, 101.3, 0.05, 11)])
    m = stream_metrics(t)
    assert m["ttft_ms"] == pytest.approx(250.0)  # median of 200 and 300
    assert m["ttft_ms_max"] == pytest.approx(300.0)
    assert m["itl_ms_p50"] == pytest.approx(50.0) and m["itl_ms_p99"] == pytest.approx(50.0)
    assert m["gen_tokens"] == 22 and m["requests"] == 2
    assert m["decode_tps"] == pytest.approx(20.0)  # from the server's timings: agrees with the ITL
    assert m["transport_rtt_ms"] == 0.8


def test_tokens_in_one_event_count_as_a_zero_gap():
    r = request(0.0, 0.1, 0.05, 4)
    r["token_times_s"] = [0.1, 0.1, 0.2, 0.3]
    m = stream_metrics(transcript(requests=[r]))  # gaps 0, 100, 100 ms
    assert m["itl_ms_p50"] == pytest.approx(100.0)
    assert m["gen_tokens"] == 4


def test_a_transcript_without_tokens_fails():
    r = request(0.0, 0.1, 0.05, 1)
    r["token_times_s"] = []
    with pytest.raises(JobFailed, match="no tokens"):
        stream_metrics(transcript(requests=[r]))


def test_conversation_turns_keep_the_history():
    turns = [dict(request(10.0 * i, 10.0 * i + 0.2, 0.05, 5, prompt_n=12, ctx=12 + 20 * i, cache_n=20 * i),
                  turn=i) for i in range(3)]
    t = {"kind": "conversation", "ready_s": 0.0, "transport": {}, "conversations": [{"index": 4, "turns": turns}]}
    m = stream_metrics(t)
    assert m["turns"] == 3 and m["conversations"] == 1 and m["context_tokens_max"] == 52
    rows = turn_rows(t)
    assert [r["context_tokens"] for r in rows] == [12, 32, 52]
    assert [r["cached_tokens"] for r in rows] == [0, 20, 40]
    assert {r["conversation"] for r in rows} == {4}


def test_sustained_series_peak_and_settled_rate():
    reqs, t = [], 0.0
    for k in range(8):  # 8 requests of 1 s each: 20 tok/s, then 10 tok/s from the 5th on
        gap = 0.05 if k < 4 else 0.1
        n = int(round(1.0 / gap))
        reqs.append(request(t, t + gap, gap, n))
        t += 1.0 + gap
    tr = {"kind": "sustained", "ready_s": 0.0, "transport": {}, "window_s": 1.0, "requests": reqs}
    series = token_rate_series(tr, 1.0)
    assert len(series) >= 8
    m = stream_metrics(tr)
    assert m["decode_tps_peak"] == pytest.approx(20.0, abs=1.01)
    assert m["decode_tps_sustained"] == pytest.approx(10.0, abs=1.01)
    assert m["decode_tps_sustained_ratio"] == pytest.approx(0.5, abs=0.1)


def test_served_plan_maps_host_times_onto_the_trace():
    tr = transcript(requests=[request(100.0, 100.2, 0.05, 11), request(101.0, 101.3, 0.05, 11)])
    step = StepResult(0, "run", start_s=-2.0, end_s=5.0, returncode=0, stdout="", stderr="")
    plan = served_plan((-4.0, -2.0), step, tr, to_trace=-100.0)
    names = [(p.name, round(p.start_s, 3), round(p.end_s, 3)) for p in plan.phases]
    assert names == [("idle", -4.0, -2.0), ("load", -2.0, -1.0), ("prefill", 0.0, 0.2), ("decode", 0.2, 0.7),
                     ("prefill", 1.0, 1.3), ("decode", 1.3, 1.8)]
    assert plan.tokens == {"prefill": 20.0, "decode": 20.0}
    assert all(p.source == "host-stream" for p in plan.phases if p.name != "idle")


def test_overlapping_requests_get_one_serve_window():
    tr = transcript(requests=[request(100.0, 100.2, 0.05, 11), request(100.1, 100.4, 0.05, 11)])
    step = StepResult(0, "run", start_s=-2.0, end_s=5.0, returncode=0, stdout="", stderr="")
    plan = served_plan(None, step, tr, to_trace=-100.0)
    assert [p.name for p in plan.phases] == ["load", "serve"]


def test_sustained_table_shades_throttled_windows_and_finds_the_first_throttle():
    reqs = [request(float(k), k + 0.05, 0.05, 19) for k in range(6)]
    tr = {"kind": "sustained", "ready_s": 0.0, "transport": {}, "window_s": 1.0, "requests": reqs}
    t = np.arange(-1, 8, 0.02)
    frame = pd.DataFrame({"t_s": t, "power_w": np.where(t > 3, 2.0, 4.0), "temp_soc_c": 30 + t,
                          "cpufreq_cpu0_khz": np.where(t > 3, 1.2e6, 2.4e6)})
    out = served_tables(frame, tr, 0.0, temp_col="temp_soc_c", throttled=[{"start_s": 3.0, "end_s": 7.0}])
    series = out["series"]
    assert [row["throttled"] for row in series][:3] == [False, False, False]
    assert series[-1]["throttled"] and series[-1]["cpufreq_khz"] == pytest.approx(1.2e6)
    assert series[0]["power_w"] == pytest.approx(4.0) and series[0]["temp_c"] == pytest.approx(30.5, abs=0.05)
    assert out["metrics"]["time_to_first_throttle_s"] == pytest.approx(3.0)
    assert out["metrics"]["energy_per_token_end_j"] < out["metrics"]["energy_per_token_start_j"]


def test_server_marks_win_over_host_times_when_every_request_has_them():
    tr = transcript(requests=[request(100.0, 100.2, 0.05, 11), request(101.0, 101.3, 0.05, 11)])
    step = StepResult(0, "run", start_s=-2.0, end_s=5.0, returncode=0, stdout="", stderr="")
    marks = [{"name": n, "t": 1000.0 + t, "task": task}
             for task, base in ((7, 0.01), (9, 1.01))
             for n, t in (("prefill_start", base), ("prefill_end", base + 0.15), ("decode_end", base + 0.6))]
    plan = served_plan(None, step, tr, to_trace=-100.0, marks=marks, mark_to_trace=-1000.0)
    got = [(p.name, round(p.start_s, 3), round(p.end_s, 3), p.source) for p in plan.phases[1:]]
    assert got == [("prefill", 0.01, 0.16, "marks"), ("decode", 0.16, 0.61, "marks"),
                   ("prefill", 1.01, 1.16, "marks"), ("decode", 1.16, 1.61, "marks")]
    # one request without its marks: every window comes from the host's times
    plan = served_plan(None, step, tr, to_trace=-100.0, marks=marks[:3], mark_to_trace=-1000.0)
    assert {p.source for p in plan.phases[1:]} == {"host-stream"}


def test_conversation_totals_sum_the_turns():
    from melt.runner.served import conversation_totals

    rows = [{"conversation": 2, "turn": i, "prompt_tokens": 10, "gen_tokens": 5, "e2e_ms": 100.0,
             "energy_j": 0.5, "context_tokens": 10 + 15 * i} for i in range(3)]
    assert conversation_totals(rows) == [{"conversation": 2, "turns": 3, "prompt_tokens": 30, "gen_tokens": 15,
                                          "e2e_ms": 300.0, "energy_j": 1.5, "context_tokens_final": 40}]

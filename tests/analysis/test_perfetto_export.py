"""`melt results export --format perfetto` on stored runs of real devices, checked against the Trace
Event Format's schema (tests/analysis/trace_events.py) and the rules a schema cannot state.

The run holds the traces of real jobs (tests/data/report/README.md): Gemma 3
270M on the virtual phone (host build, and the arm64 build under qemu-user),
on the virtual Jetson over SSH and on this machine, each with its phases.
"""

from __future__ import annotations

import copy
import io
import json
import math
from pathlib import Path

import jsonschema
import numpy as np
import pandas as pd
import pytest

from melt.analysis.perfetto import PHASES_TID, THROTTLED_TID, TURNS_TID, TraceJob, trace_dict, write_trace
from melt.store.runs import ResultsStore
from tests.analysis import trace_events
from tests.helpers import melt

DATA = Path(__file__).parents[1] / "data" / "report"


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    """A stored run of the real jobs' records and traces; returns (results dir, run id, jobs)."""
    root = tmp_path_factory.mktemp("perfetto") / "results"
    run = ResultsStore(root).create_run({"name": "real traces"}, experiment_path=None, host={})
    jobs = json.loads((DATA / "real-traces.json").read_text())
    for i, job in enumerate(jobs):
        record = {k: v for k, v in job.items() if k != "trace"}
        record.update(job_id=f"job{i}", cell_id=f"cell{i}", status="ok", reason=None, provenance={})
        run.save_job(record, {"trace.parquet": (DATA / job["trace"]).read_bytes()})
        job.update(record, frame=pd.read_parquet(DATA / job["trace"]))
    # a failed job with no telemetry is not part of the trace
    run.save_job({"job_id": "failed0", "cell_id": "c", "status": "failed", "reason": "boom", "device": "x"})
    run.update(status="complete-with-failures", total_jobs=len(jobs) + 1)
    return root, run.run_id, jobs


@pytest.fixture(scope="module")
def exported(real_run, tmp_path_factory):
    root, run_id, jobs = real_run
    out = tmp_path_factory.mktemp("perfetto-out") / "trace.json"
    done = melt("results", "export", run_id, "--results", str(root), "--format", "perfetto", "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert f"wrote {len(jobs)} jobs" in done.stderr
    return trace_events.load(out.read_text(encoding="utf-8")), jobs


def by_pid(trace: dict) -> dict[int, dict]:
    names = {e["pid"]: e["args"]["name"] for e in trace["traceEvents"]
             if e["ph"] == "M" and e["name"] == "process_name"}
    return {pid: {"name": name, "events": [e for e in trace["traceEvents"] if e["pid"] == pid]}
            for pid, name in names.items()}


def test_export_matches_the_schema_and_the_rules(exported):
    trace, jobs = exported
    trace_events.validate(trace)
    assert trace_events.problems(trace) == []
    assert trace["displayTimeUnit"] == "ms"
    assert trace["otherData"]["clock"] == "device"
    assert len(by_pid(trace)) == len(jobs)  # one process per job with telemetry, the failed one left out


def test_each_channel_is_a_counter_track_of_its_finite_readings_on_the_device_clock(exported):
    trace, jobs = exported
    processes = by_pid(trace)
    for pid, job in enumerate(jobs, start=1):
        frame = job["frame"]
        events = processes[pid]["events"]
        channels = [c for c in frame.columns if c != "t_s"]
        assert {e["name"] for e in events if e["ph"] == "C"} == set(channels)
        for channel in channels:
            got = [e for e in events if e["ph"] == "C" and e["name"] == channel]
            ok = frame[channel].notna()
            assert len(got) == int(ok.sum()), channel  # NaN ticks left out, nothing filled in
            assert np.allclose([e["args"]["value"] for e in got], frame.loc[ok, channel])
            assert np.allclose([e["ts"] for e in got], frame.loc[ok, "t_s"] * 1e6, rtol=0, atol=0.001)


def test_phases_are_slices_on_the_same_clock_as_the_samples(exported):
    trace, jobs = exported
    processes = by_pid(trace)
    for pid, job in enumerate(jobs, start=1):
        slices = [e for e in processes[pid]["events"] if e["ph"] == "X" and e["tid"] == PHASES_TID]
        assert [(s["name"], s["ts"], s["ts"] + s["dur"], s["args"]["source"]) for s in slices] == [
            (p["name"], pytest.approx(p["start_s"] * 1e6, abs=0.001), pytest.approx(p["end_s"] * 1e6, abs=0.001),
             p["source"]) for p in job["phases"]]
    # the virtual phone draws more power while it decodes than while it idles: read from the file
    # alone, the decode slice lands on the samples where power rose
    events = processes[1]["events"]
    window = {s["name"]: (s["ts"], s["ts"] + s["dur"]) for s in events if s["ph"] == "X"}
    power = [(e["ts"], e["args"]["value"]) for e in events if e["ph"] == "C" and e["name"] == "power_w"]

    def mean(phase: str) -> float:
        lo, hi = window[phase]
        inside = [v for t, v in power if lo <= t <= hi]
        assert len(inside) >= 5
        return sum(inside) / len(inside)

    assert mean("decode") > 1.5 * mean("idle")


def test_process_names_say_what_the_jobs_are(exported):
    trace, jobs = exported
    names = [p["name"] for p in by_pid(trace).values()]
    assert names[0] == "virtual-phone · gemma3-270m-q4_k_m · bench · rep 0 (simulated)"
    assert names[2].startswith("local · ") and "(" not in names[2]  # measured on this machine: no label
    assert names[3].endswith("(simulated, emulated)")


def test_one_job_alone_and_errors_in_one_line(real_run, tmp_path):
    root, run_id, _ = real_run
    done = melt("results", "export", run_id, "--results", str(root), "--format", "perfetto", "--job", "job1")
    assert done.returncode == 0, done.stderr
    trace = trace_events.load(done.stdout)
    trace_events.validate(trace)
    assert [p["name"] for p in by_pid(trace).values()] == [
        "virtual-jetson · gemma · hello · rep 0 (simulated)"]
    for args, words in ((["--job", "job"], "matches 4 jobs"), (["--job", "nope"], "no job 'nope' with telemetry"),
                        (["--job", "failed0"], "no job 'failed0' with telemetry"),
                        (["-o", str(tmp_path / "missing" / "t.json")], "could not write")):
        done = melt("results", "export", run_id, "--results", str(root), "--format", "perfetto", *args)
        assert done.returncode != 0
        assert words in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    done = melt("results", "export", run_id, "--results", str(root), "--format", "csv", "--job", "job1")
    assert done.returncode != 0 and "--job applies to --format perfetto only" in done.stderr


def test_hostile_records_and_traces_give_a_valid_trace():
    """Windows and samples from another host: only well-formed windows and finite readings are written."""
    record = {
        "job_id": "j", "device": "d" * 5000, "model": "m", "workload": "w", "repetition": 0, "simulated": True,
        "phases": [{"name": "decode", "start_s": 1.0, "end_s": 2.0, "source": "marks"},
                   {"name": "backwards", "start_s": 2.0, "end_s": 1.0},
                   {"name": "nan", "start_s": float("nan"), "end_s": 1.0},
                   {"name": "text", "start_s": "0", "end_s": "1"}, "not a dict", {"name": "bool", "start_s": True,
                                                                                 "end_s": 2}],
        "throttled_intervals": [{"start_s": 1.5, "end_s": 1.75}, {"start_s": 1.0, "end_s": float("inf")}],
        "turns": [{"turn": 1, "start_s": 1.0, "end_s": 1.5, "prompt_tokens": 12, "ttft_ms": float("nan")}],
    }
    samples = pd.DataFrame({
        "t_s": [3.0, 0.0, float("nan"), 1.0, 2.0],  # out of order, one tick with no time
        "power_w": [4.0, float("inf"), 9.0, float("nan"), 2.0],
        "temp_skin_c": [30.0, 31.0, 32.0, 33.0, 34.0],
        "bad name\"<": [1.0] * 5, "x" * 300: [1.0] * 5, "note": ["a"] * 5,
    })
    trace = trace_events.load(json.dumps(trace_dict([TraceJob("r", record, samples)]), allow_nan=False))
    trace_events.validate(trace)
    assert trace_events.problems(trace) == []
    events = trace["traceEvents"]
    assert [(e["tid"], e["name"]) for e in events if e["ph"] == "X"] == [
        (PHASES_TID, "decode"), (THROTTLED_TID, "throttled"), (TURNS_TID, "turn 1")]
    assert [e["args"] for e in events if e["ph"] == "X" and e["tid"] == TURNS_TID] == [
        {"turn": 1, "prompt_tokens": 12}]
    counters = [(e["name"], e["ts"], e["args"]["value"]) for e in events if e["ph"] == "C"]
    assert counters == [("power_w", 2e6, 2.0), ("power_w", 3e6, 4.0)] + [
        ("temp_skin_c", t * 1e6, v) for t, v in ((0.0, 31.0), (1.0, 33.0), (2.0, 34.0), (3.0, 30.0))]
    name = next(e["args"]["name"] for e in events if e["name"] == "process_name")
    assert len(name) < 300 and name.endswith("(simulated)")


def test_a_channel_named_twice_is_left_out():
    samples = pd.DataFrame([[0.0, 1.0, 2.0, 3.0]], columns=["t_s", "power_w", "power_w", "temp_skin_c"])
    events = trace_dict([TraceJob("r", {"job_id": "j"}, samples)])["traceEvents"]
    assert [(e["name"], e["args"]["value"]) for e in events if e["ph"] == "C"] == [("temp_skin_c", 3.0)]


def test_streamed_file_is_the_same_trace():
    record = {"job_id": "j", "device": "d", "phases": [{"name": "run", "start_s": 0.0, "end_s": 1.0}]}
    jobs = [TraceJob("r", record, pd.DataFrame({"t_s": [0.0, 1.0], "power_w": [1.0, 2.0]})),
            TraceJob("r", dict(record, job_id="k"), None)]
    buf = io.StringIO()
    n = write_trace(jobs, buf)
    assert trace_events.load(buf.getvalue()) == trace_dict(jobs)
    assert n == len(trace_dict(jobs)["traceEvents"])


def test_the_schema_and_rules_refuse_broken_traces(exported):
    """The checks are not vacuous: each broken copy of a real export is refused."""
    good, _ = exported
    events = good["traceEvents"]
    counter = next(i for i, e in enumerate(events) if e["ph"] == "C")
    slice_ = next(i for i, e in enumerate(events) if e["ph"] == "X")
    schema_breaks = [
        lambda t: t["traceEvents"][counter]["args"].update(value="41"),
        lambda t: t["traceEvents"][counter].update(args={}),
        lambda t: t["traceEvents"][slice_].pop("dur"),
        lambda t: t["traceEvents"][slice_].update(dur=-1),
        lambda t: t["traceEvents"][0]["args"].update(name=7),
        lambda t: t["traceEvents"].append({"ph": "B", "name": "x", "ts": 0, "pid": 1, "tid": 1}),
        lambda t: t.update(displayTimeUnit="s"),
    ]
    for brk in schema_breaks:
        bad = copy.deepcopy(good)
        brk(bad)
        with pytest.raises(jsonschema.ValidationError):
            trace_events.validate(bad)
    rule_breaks = [
        lambda t: t["traceEvents"][counter].update(ts=1e12),  # the next reading goes back in time
        lambda t: t["traceEvents"][slice_].update(ts=-5e6),  # before the samples
        lambda t: t["traceEvents"][counter]["args"].update(value=math.nan),
        lambda t: t["traceEvents"].append({"ph": "C", "name": "x", "ts": 0, "pid": 99, "args": {"v": 1}}),
    ]
    for brk in rule_breaks:
        bad = copy.deepcopy(good)
        brk(bad)
        assert trace_events.problems(bad), brk
    with pytest.raises(ValueError):
        trace_events.load('{"traceEvents": [{"ph": "C", "args": {"v": NaN}}]}')


def _garbage():
    from hypothesis import strategies as st

    number = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-2 ** 70, 2 ** 70),
                       st.booleans(), st.none(), st.text(max_size=5))
    window = st.one_of(st.dictionaries(st.sampled_from(["name", "start_s", "end_s", "source", "turn",
                                                        "prompt_tokens"]), number, max_size=6),
                       number)
    record = st.fixed_dictionaries({}, optional={
        "job_id": st.text(max_size=10), "device": st.one_of(st.text(max_size=50), number),
        "simulated": number, "emulated": number, "phases": st.lists(window, max_size=5),
        "throttled_intervals": st.one_of(st.lists(window, max_size=3), number),
        "turns": st.lists(window, max_size=3)})
    column = st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=4, max_size=4)
    frame = st.dictionaries(st.one_of(st.sampled_from(["t_s", "power_w", "temp_c"]), st.text(max_size=8)),
                            column, max_size=4)
    return record, frame


def test_garbage_records_and_traces_always_give_a_valid_trace():
    """Property: whatever a record and a trace hold, the file matches the schema, every number is
    finite and every counter track moves forward."""
    from hypothesis import given, settings

    record, frame = _garbage()

    @settings(max_examples=200, deadline=None)
    @given(record, frame)
    def check(rec, columns):
        samples = pd.DataFrame(columns) if columns else None
        buf = io.StringIO()
        write_trace([TraceJob("r", rec, samples)], buf)
        trace = trace_events.load(buf.getvalue())
        trace_events.validate(trace)
        # a window on the device's clock may lie past the samples of a garbage trace: that rule is
        # checked on real runs above
        assert [p for p in trace_events.problems(trace) if "outside its span" not in p] == []

    check()

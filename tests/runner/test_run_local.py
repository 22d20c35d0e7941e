"""End to end on this machine with the real llama.cpp binaries and the tiny model."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from tests.helpers import error_line, last_line, melt, melt_child, show, wait_for_journal

pytestmark = pytest.mark.slow

EXPERIMENT = """
name: e2e
devices: [local]
models: [{{name: tiny, path: {model}}}]
workloads:
  - {{name: bench, kind: bench, n_prompt: [16], n_gen: [8], threads: [1]}}
  - {{name: gen, kind: generate, prompt: "Hello there", n_predict: 12, threads: 1}}
repetitions: {reps}
warmup: {warmup}
"""


def write_experiment(path: Path, body: str) -> Path:
    path.write_text(body)
    return path


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.gguf"
    out = melt("model", "tiny", str(path))
    assert out.returncode == 0, out.stderr
    return path


def test_quick_run_stores_real_metrics_with_provenance(tmp_path, tiny_model, llamacpp_host_build):
    exp = write_experiment(tmp_path / "e.yaml", EXPERIMENT.format(model=tiny_model, reps=2, warmup=1))
    out = melt("run", str(exp), "--results", str(tmp_path / "r"))
    assert out.returncode == 0, out.stderr
    run_id = last_line(out.stdout)
    data = show(run_id, tmp_path / "r")
    assert data["schema_version"] == 1 and data["status"] == "complete"
    jobs = data["jobs"]
    assert len(jobs) == 4 and all(j["status"] == "ok" for j in jobs), [j["reason"] for j in jobs]
    bench = [j for j in jobs if j["kind"] == "bench"]
    gen = [j for j in jobs if j["kind"] == "generate"]
    assert len(bench) == len(gen) == 2
    for j in bench:
        assert j["metrics"]["prefill_tps"] > 0 and j["metrics"]["decode_tps"] > 0
    for j in gen:
        m = j["metrics"]
        assert m["decode_tps"] > 0 and m["prefill_tps"] > 0 and m["load_ms"] > 0 and m["gen_tokens"] > 0
    prov = jobs[0]["provenance"]
    assert prov["model"]["sha256"] and len(prov["model"]["sha256"]) == 64
    assert "llama-bench" in prov["command"] and str(tiny_model) in prov["command"]
    assert prov["framework_build"]["profile"] == "host"
    assert prov["device"]["kind"] == "local" and prov["melt_version"]
    # raw output is kept beside the record
    run_dir = tmp_path / "r" / run_id
    assert (run_dir / "jobs" / gen[0]["job_id"] / "stderr.txt").stat().st_size > 0
    # the terminal view shows the same run
    table = melt("results", "show", run_id, "--results", str(tmp_path / "r"))
    assert table.returncode == 0 and "bench" in table.stdout and "gen" in table.stdout


def test_kill_midway_then_resume_finishes_only_the_rest(tmp_path, tiny_model, llamacpp_host_build):
    exp = write_experiment(tmp_path / "e.yaml", EXPERIMENT.format(model=tiny_model, reps=4, warmup=0))
    results = tmp_path / "r"
    proc = melt_child("run", str(exp), "--results", str(results), start_new_session=True)
    journal = wait_for_journal(results, 2, proc=proc)
    os.killpg(proc.pid, signal.SIGKILL)  # a crash, not a polite stop
    proc.wait()
    run_id = journal.parent.name
    before = {e["job_id"] for e in map(json.loads, journal.read_text().splitlines()) if e["status"] == "ok"}
    assert 2 <= len(before) < 8
    stamps = {j["job_id"]: j["finished_at"] for j in show(run_id, results)["jobs"]}

    out = melt("run", "--resume", run_id, "--results", str(results))
    assert out.returncode == 0, out.stderr
    data = show(run_id, results)
    assert data["status"] == "complete"
    assert len(data["jobs"]) == 8 and all(j["status"] == "ok" for j in data["jobs"])
    for job in data["jobs"]:
        if job["job_id"] in before:  # finished before the kill: not run again
            assert job["finished_at"] == stamps[job["job_id"]]


def test_binary_failure_is_a_failed_row_not_a_zero(tmp_path, llamacpp_host_build):
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"this is not a model" * 100)
    exp = write_experiment(tmp_path / "e.yaml", EXPERIMENT.format(model=garbage, reps=1, warmup=0))
    out = melt("run", str(exp), "--results", str(tmp_path / "r"))
    assert out.returncode == 3, out.stderr  # the run is stored; some jobs failed
    assert "2 of 2 jobs failed" in out.stderr
    data = show(last_line(out.stdout), tmp_path / "r")
    assert data["status"] == "complete-with-failures" and len(data["jobs"]) == 2
    for job in data["jobs"]:
        assert job["status"] == "failed"
        assert job["reason"] and "exit" in job["reason"].lower()
        assert job["metrics"] == {}


def test_missing_model_and_unknown_framework_are_one_line_errors(tmp_path):
    exp = write_experiment(tmp_path / "e.yaml", EXPERIMENT.format(model=tmp_path / "nope.gguf", reps=1, warmup=0))
    out = melt("run", str(exp), "--results", str(tmp_path / "r"))
    assert out.returncode == 1
    assert "models[0].path: model file not found" in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1

    exp.write_text(EXPERIMENT.format(model=tmp_path / "nope.gguf", reps=1, warmup=0)
                   + "frameworks: [{name: llamacpp}]\n")
    out = melt("run", str(exp), "--results", str(tmp_path / "r"))
    assert "Unknown framework 'llamacpp'. Did you mean: llama.cpp?" in error_line(out)
    assert not (tmp_path / "r").exists()


def test_adaptive_repetition_adds_runs_until_the_interval_is_narrow(tmp_path, tiny_model, llamacpp_host_build):
    body = EXPERIMENT.format(model=tiny_model, reps=2, warmup=0).replace(
        "  - {name: bench, kind: bench, n_prompt: [16], n_gen: [8], threads: [1]}\n", "")
    # an impossible target: every cell runs to the cap
    body += "adaptive: {metric: decode_tps, rel_half_width: 0.000001, max_repetitions: 4}\n"
    exp = write_experiment(tmp_path / "e.yaml", body)
    out = melt("run", str(exp), "--results", str(tmp_path / "r"))
    assert out.returncode == 0, out.stderr
    data = show(last_line(out.stdout), tmp_path / "r")
    assert sorted(j["repetition"] for j in data["jobs"]) == [0, 1, 2, 3]
    assert all(j["status"] == "ok" for j in data["jobs"])


def test_prebuilt_binaries_instead_of_a_build(tmp_path, tiny_model, llamacpp_host_build):
    body = EXPERIMENT.format(model=tiny_model, reps=1, warmup=0)
    exp = write_experiment(tmp_path / "e.yaml", body + f"frameworks: [{{name: llama.cpp, binaries: {llamacpp_host_build.bin_dir}}}]\n")
    out = melt("run", str(exp), "--results", str(tmp_path / "r"))
    assert out.returncode == 0, out.stderr
    data = show(last_line(out.stdout), tmp_path / "r")
    assert all(j["status"] == "ok" for j in data["jobs"])
    build = data["jobs"][0]["provenance"]["framework_build"]
    assert build["profile"] == "prebuilt" and len(build["binaries"]["llama-bench"]["sha256"]) == 64

    exp.write_text(body + "frameworks: [{name: llama.cpp, binaries: no/such/dir}]\n")
    out = melt("run", str(exp), "--results", str(tmp_path / "r"))
    assert "frameworks[0].binaries: folder not found: no/such/dir" in error_line(out)

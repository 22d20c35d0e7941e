"""Hostile result notes against the real submitter: `FarmPool` on a real Redis, the real runner and store.

Each job of a run gets one note pushed on the run's list, as a hostile
farm worker (it holds the farm key) or a host on the broker's network (it
does not) would push it. Every bad note must end as a failed job with its
reason, and nothing may be written outside the run's folder.
"""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path

import pytest

from melt.farm.signing import FarmKeys, sign
from melt.farm.task import encode_note, pack_files
from tests.farm.conftest import FARM_KEY

pytestmark = [pytest.mark.redis, pytest.mark.timeout(120)]

EXPERIMENT = """
name: hostile-notes
devices: [evil-phone]
models: [{{name: tiny, tiny_seed: 3}}]
workloads: [{{name: g, kind: generate, prompt: hi, n_predict: 2}}]
repetitions: {reps}
warmup: 0
"""

KEYS = FarmKeys((FARM_KEY.encode(),), "test")
OTHER = FarmKeys((b"a-key-that-is-not-the-farms-key-0123456789",), "attacker")


def good_record(job, **extra) -> dict:
    return {"job_id": job.job_id, "cell_id": job.cell_id, "status": "ok", "reason": None, "device": job.device,
            "framework": "llama.cpp", "model": "tiny", "workload": job.workload, "kind": job.kind,
            "params": job.params, "repetition": job.repetition, "simulated": True,
            "metrics": {"decode_tps": 10.0}, "provenance": {}, **extra}


def note(run_id: str, job, record: dict, files: dict[str, str], keys: FarmKeys = KEYS) -> str:
    return encode_note({"kind": "record", "run_id": run_id, "job_id": job.job_id, "record": record,
                        "files": files}, keys)


def every_file(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file() or p.is_symlink()}


def test_hostile_notes_become_failed_jobs_and_write_nothing_outside_the_run(redis_url, tmp_path, monkeypatch):
    import melt.farm.submit as submit
    import melt.farm.task as task
    from melt.config.loader import load_experiment
    from melt.farm.app import redis_client
    from melt.farm.registry import events_key
    from melt.farm.submit import FarmPool
    from melt.runner.engine import QuietEvents, run_experiment
    from melt.runner.matrix import expand
    from melt.runner.models import resolve_model

    monkeypatch.setattr(task, "MAX_JOB_FILE_BYTES", 1 << 20)  # a 1 MiB limit per file: bombs stay small
    monkeypatch.setattr(submit, "MAX_NOTE_BYTES", 256 << 10)
    exp_path = tmp_path / "exp" / "e.yaml"
    exp_path.parent.mkdir()
    exp_path.write_text(EXPERIMENT.format(reps=10))
    experiment = load_experiment(exp_path)
    model = resolve_model(experiment.models[0], base=exp_path.parent, source="test", index=0)
    jobs = expand(experiment, {"tiny": model.sha256})
    results = tmp_path / "results"
    outside = tmp_path / "outside"
    outside.mkdir()
    canary = outside / "canary.txt"
    canary.write_text("untouched")
    client = redis_client(redis_url)
    bomb = pack_files({"stdout.txt": b"\0" * (2 << 20)})  # 2 MiB of zeros: a few KiB packed
    assert len(bomb["stdout.txt"]) < 20_000
    ok_files = pack_files({"stdout.txt": b"fine", "stderr.txt": b"timings"})
    expected: dict[str, str] = {}

    class Hostile(QuietEvents):
        def __init__(self) -> None:
            self.stages: list[str] = []

        def run_started(self, run_id: str, total: int, done: int) -> None:
            key = events_key(run_id)
            job_dir = results / run_id / "jobs"
            plan = [
                (good_record(jobs[0], job_id="../../../outside/escaped"), ok_files, "names job '../../../outside"),
                (good_record(jobs[1], job_id=str(outside / "abs")), ok_files, "names job '/"),
                (good_record(jobs[2]), {"../../../outside/x.txt": ok_files["stdout.txt"]}, "sent the file '../"),
                (good_record(jobs[3]), {str(canary): ok_files["stdout.txt"]}, "sent the file '/"),
                (good_record(jobs[4]), {"result.json": ok_files["stdout.txt"]}, "sent the file 'result.json'"),
                (good_record(jobs[5]), bomb, "over melt's limit of 1 MiB"),
                (good_record(jobs[6]), ok_files, "is a symlink"),
            ]
            # a symlink in the job's folder, pointing outside: the file must not be written through it
            (job_dir / jobs[6].job_id).mkdir(parents=True)
            (job_dir / jobs[6].job_id / "stdout.txt").symlink_to(canary)
            for job, (record, files, reason) in zip(jobs, plan):
                client.rpush(key, note(run_id, job, record, files))
                expected[job.job_id] = reason
            # a note too large to read: dropped by Redis unread, its job fails
            huge = note(run_id, jobs[7], good_record(jobs[7]), pack_files({"stdout.txt": os.urandom(300_000)}))
            assert len(huge) > 256 << 10
            client.rpush(key, huge)
            expected[jobs[7].job_id] = "over the farm's limit of 262,144 bytes"
            # a host without the farm key, and a signed note of another run: refused; the real ones then count
            client.rpush(key, note(run_id, jobs[8], good_record(jobs[8], metrics={"decode_tps": 666.0}),
                                   ok_files, keys=OTHER))
            client.rpush(key, json.dumps({"job": jobs[8].job_id, "env": {"body": {"kind": "record"}}}))
            client.rpush(key, note("20000101-000000-dead", jobs[9], good_record(jobs[9], metrics={"decode_tps": 1.0}),
                                   ok_files))
            client.rpush(key, note(run_id, jobs[8], good_record(jobs[8]), ok_files))
            client.rpush(key, note(run_id, jobs[9], good_record(jobs[9]), ok_files))

        def stage(self, message: str) -> None:
            self.stages.append(message)

    before = every_file(tmp_path)
    events = Hostile()
    try:
        run = run_experiment(exp_path, results_dir=results, events=events, pool=FarmPool(redis_url, poll_s=0.2))
    finally:
        client.delete("device.evil-phone")
    by_id = {j["job_id"]: j for j in run.jobs()}
    assert set(by_id) == {j.job_id for j in jobs}
    for job_id, reason in expected.items():
        assert by_id[job_id]["status"] == "failed" and reason in by_id[job_id]["reason"], by_id[job_id]["reason"]
    # only the signed notes of this run were stored, not the forged ones
    assert by_id[jobs[8].job_id]["status"] == "ok" and by_id[jobs[8].job_id]["metrics"] == {"decode_tps": 10.0}
    assert by_id[jobs[9].job_id]["status"] == "ok" and by_id[jobs[9].job_id]["metrics"] == {"decode_tps": 10.0}
    assert any("not signed" in s or "does not hold" in s for s in events.stages), events.stages
    assert any("belongs to run" in s for s in events.stages), events.stages
    # nothing written outside the run's folder, nothing through the symlink
    run_dir = results / run.run_id
    new = every_file(tmp_path) - before
    assert all(run_dir in p.parents or p.parent == results for p in new), sorted(map(str, new))
    assert canary.read_text() == "untouched" and sorted(outside.iterdir()) == [canary]
    for job_dir in (run_dir / "jobs").iterdir():
        names = {p.name for p in job_dir.iterdir()}
        assert names <= {"result.json", "stdout.txt", "stderr.txt"}, names
    assert (run_dir / "jobs" / jobs[8].job_id / "stdout.txt").read_bytes() == b"fine"


def test_a_zlib_bomb_stops_at_the_default_limit():
    from melt.errors import OutputTooLargeError
    from melt.farm.task import unpack_files
    from melt.store.paths import MAX_JOB_FILE_BYTES

    squeeze = zlib.compressobj(9)
    chunk = b"\0" * (1 << 20)
    packed = b"".join(squeeze.compress(chunk) for _ in range((MAX_JOB_FILE_BYTES >> 20) + 64)) + squeeze.flush()
    assert len(packed) < 1 << 20  # 320 MiB of zeros in well under 1 MiB
    import base64

    with pytest.raises(OutputTooLargeError, match="over melt's limit of 256 MiB"):
        unpack_files({"stdout.txt": base64.b64encode(packed).decode()})
    with pytest.raises(Exception, match="not base64"):
        unpack_files({"stdout.txt": "%%%"})
    with pytest.raises(Exception, match="not zlib"):
        unpack_files({"stdout.txt": base64.b64encode(b"plain").decode()})


def test_the_store_refuses_hostile_names_itself(tmp_path):
    """The same check serves a local run: a record's id and file names are confined before any write."""
    from melt.errors import UnsafePathError
    from melt.store.runs import ResultsStore

    run = ResultsStore(tmp_path / "r").create_run({"name": "e"}, experiment_path=None, host={})
    record = {"job_id": "0123456789abcdef", "status": "ok"}
    for job_id in ["../x", "/abs", "..", "a/b", ""]:
        with pytest.raises(UnsafePathError):
            run.save_job({**record, "job_id": job_id})
    for name in ["../x.txt", "/tmp/x.txt", "sub/stdout.txt", "result.json", "other.bin"]:
        with pytest.raises(UnsafePathError):
            run.save_job(record, {name: b"x"})
    assert not (run.dir / "jobs" / "0123456789abcdef").exists()  # refused before anything was written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]

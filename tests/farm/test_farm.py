"""The farm end to end: Redis, two `melt farm worker` hosts, four virtual phones."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.farm.conftest import PASSWORD, query_form
from tests.helpers import ROOT, last_line, melt, show

pytestmark = [pytest.mark.adb, pytest.mark.redis, pytest.mark.slow, pytest.mark.timeout(240)]

EXPERIMENT = """
name: farm
devices: [phone-a, phone-b, phone-c, phone-d]
models: [{{name: tiny, path: {model}}}]
workloads:
  - {{name: gen, kind: generate, prompt: "Hello", n_predict: 8, threads: 1}}
repetitions: {reps}
warmup: 0
"""


@pytest.fixture(scope="module")
def experiment(farm, tmp_path_factory):
    import shutil

    from melt.models.tiny import write_tiny_model

    tmp = tmp_path_factory.mktemp("exp")
    model = write_tiny_model(tmp / "tiny.gguf", seed=5)
    farm.models.mkdir(parents=True, exist_ok=True)
    shutil.copy(model, farm.models / "any-name.gguf")  # the workers find it by its sha256

    def make(reps: int) -> Path:
        path = tmp / f"farm{reps}.yaml"
        path.write_text(EXPERIMENT.format(model=model, reps=reps))
        return path

    return make


def journal_ids(results: Path, run_id: str) -> list[str]:
    lines = (results / run_id / "journal.jsonl").read_text().splitlines()
    return [json.loads(line)["job_id"] for line in lines]


def assert_once_each(results: Path, run_id: str, n: int) -> list[dict]:
    data = show(run_id, results)
    jobs = data["jobs"]
    assert data["status"] == "complete", [j["reason"] for j in jobs]
    assert len(jobs) == n and all(j["status"] == "ok" for j in jobs)
    ids = journal_ids(results, run_id)
    assert len(ids) == n and len(set(ids)) == n, Counter(ids).most_common(3)  # journaled once each
    db = sqlite3.connect(results / "melt.db")
    rows = db.execute("SELECT job_id FROM jobs WHERE run_id=?", (run_id,)).fetchall()
    assert sorted(r[0] for r in rows) == sorted(ids)
    assert len(list((results / run_id / "jobs").iterdir())) == n
    for job in jobs:
        assert job["metrics"]["decode_tps"] > 0 and job["simulated"] is True
        job_dir = results / run_id / "jobs" / job["job_id"]
        assert (job_dir / "trace.parquet").stat().st_size > 0  # the trace came back, decompressed
        assert (job_dir / "stderr.txt").stat().st_size > 0
    return jobs


def no_password_in(paths: list[Path], pids: list[int]) -> None:
    for root in paths:
        for p in [root] if root.is_file() else root.rglob("*"):
            if p.is_file():
                assert PASSWORD.encode() not in p.read_bytes(), p
    for pid in pids:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        assert PASSWORD.encode() not in cmdline, cmdline


def descendants(pid: int) -> list[int]:
    out = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            ppid = next(line for line in status.read_text().splitlines() if line.startswith("PPid:"))
        except (OSError, StopIteration):
            continue
        if int(ppid.split()[1]) == pid:
            child = int(status.parent.name)
            out += [child, *descendants(child)]
    return out


def test_sixteen_jobs_across_two_hosts_each_stored_once(farm, experiment, tmp_path):
    results = tmp_path / "r"
    out = melt("run", str(experiment(4)), "--farm", farm.url, "--results", str(results), timeout=200)
    assert out.returncode == 0, out.stderr
    run_id = last_line(out.stdout)
    jobs = assert_once_each(results, run_id, 16)
    per_device = Counter(j["device"] for j in jobs)
    assert per_device == {"phone-a": 4, "phone-b": 4, "phone-c": 4, "phone-d": 4}
    # each job ran on its device's queue, and one device never ran two jobs at once
    windows: dict[str, list[tuple[str, str]]] = {}
    for j in jobs:
        assert j["provenance"]["farm"]["queue"] == f"device.{j['device']}"
        assert j["provenance"]["farm"]["delivery"] == 1
        windows.setdefault(j["device"], []).append((j["started_at"], j["finished_at"]))
    for spans in windows.values():
        spans.sort()
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), spans
    # devices did run side by side
    all_spans = sorted((s, e, d) for d, spans in windows.items() for s, e in spans)
    assert any(b[0] < a[1] and a[2] != b[2] for a, b in zip(all_spans, all_spans[1:]))
    manifest = json.loads((results / run_id / "manifest.json").read_text())
    assert manifest["executor"] == "farm" and manifest["executor_at"].startswith("redis://:***@127.0.0.1:")
    pids = [h.proc.pid for h in farm.hosts] + [c for h in farm.hosts for c in descendants(h.proc.pid)]
    assert len(pids) >= 6  # two supervisors, a worker process (and its pool child) per device
    no_password_in([results, *[h.log_dir for h in farm.hosts]], pids)
    assert PASSWORD not in out.stdout + out.stderr

    status = melt("farm", "status", "--broker", farm.url, "--json")
    assert status.returncode == 0, status.stderr
    rows = {r["device"]: r for r in json.loads(status.stdout)}
    assert set(rows) == {"phone-a", "phone-b", "phone-c", "phone-d"}
    assert all(r["health"] == "online" and r["queued"] == 0 and r["running"] is None for r in rows.values())
    assert len({r["host"] for r in rows.values()}) == 1  # one machine here, two supervisors
    table = melt("farm", "status", "--broker", farm.url)
    assert table.returncode == 0 and "phone-c" in table.stdout and PASSWORD not in table.stdout


def test_worker_process_killed_mid_job_is_redelivered_once_and_recorded_once(farm, experiment, tmp_path):
    from melt.farm.app import redis_client
    from melt.farm.registry import RUNNING_KEY

    results = tmp_path / "r"
    env = {**os.environ, "COLUMNS": "200"}
    proc = subprocess.Popen([sys.executable, "-m", "melt.cli.main", "run", str(experiment(3)), "--farm",
                             query_form(farm.url), "--results", str(results)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    client = redis_client(farm.url)
    killed = None
    deadline = time.monotonic() + 120
    while killed is None and time.monotonic() < deadline:
        for device, raw in client.hgetall(RUNNING_KEY).items():
            info = json.loads(raw)
            if device == "phone-c" and info.get("delivery") == 1:
                os.kill(info["pid"], signal.SIGKILL)  # the process running the job dies mid-job
                killed = info
                break
        time.sleep(0.01)
    assert killed is not None, "no job seen running on phone-c"
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    jobs = assert_once_each(results, last_line(out), 12)
    victim = next(j for j in jobs if j["job_id"] == killed["job_id"])
    assert victim["device"] == "phone-c"
    assert victim["provenance"]["farm"]["delivery"] == 2  # redelivered once, to the same queue
    assert victim["provenance"]["farm"]["queue"] == "device.phone-c"
    assert all(j["provenance"]["farm"]["delivery"] == 1 for j in jobs if j is not victim)
    # submitted with ?password=: masked in the manifest, the output and the results like the other form
    manifest = json.loads((results / last_line(out) / "manifest.json").read_text())
    assert manifest["executor_at"].endswith("?password=***")
    no_password_in([results], [])
    assert PASSWORD not in out + err


def test_vanished_phone_stops_taking_jobs_and_comes_back(farm):
    from melt.farm.app import redis_client
    from melt.farm.registry import farm_status

    client = redis_client(farm.url)

    def health(device: str) -> str:
        return next(e.health for e in farm_status(client) if e.device == device)

    def wait(device: str, wanted: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while health(device) != wanted:
            assert time.monotonic() < deadline, f"{device} is {health(device)}, not {wanted}"
            time.sleep(0.2)

    phone = farm.phones["phone-b"]
    phone.kill()
    wait("phone-b", "offline")
    host = farm.hosts[0]
    wait_log(host.stderr, "phone-b: device does not answer")
    phone.restart()
    farm.adb.connect(phone.address)
    wait("phone-b", "online")
    farm.wait_online(["phone-b"])
    text = host.stderr.read_text()
    assert text.count("consumes device.phone-b") >= 2, text  # a new worker process took over


def wait_log(path: Path, text: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while text not in path.read_text(errors="replace"):
        assert time.monotonic() < deadline, path.read_text(errors="replace")
        time.sleep(0.2)


def test_workers_refuse_forged_expired_and_replayed_messages_through_the_broker(farm, experiment):
    """Messages put on a device's queue as a host on the broker's network would: only the signed one runs, once."""
    import hashlib
    import secrets

    from melt.config.loader import load_experiment
    from melt.farm.app import TASK_NAME, make_app, redis_client
    from melt.farm.registry import done_key, events_key
    from melt.farm.signing import FarmKeys, sign
    from melt.runner.matrix import expand
    from tests.farm.conftest import FARM_KEY

    exp = load_experiment(experiment(1)).model_copy(update={"devices": ["phone-a"]})
    sha = hashlib.sha256(Path(exp.models[0].path).read_bytes()).hexdigest()
    run_id = f"20260102-000000-{secrets.token_hex(2)}"
    job = expand(exp, {"tiny": sha})[0]
    body = {"run_id": run_id, "job_id": job.job_id, "experiment": exp.model_dump(mode="json"),
            "model_hashes": {"tiny": sha}, "melt_version": "test"}
    keys = FarmKeys((FARM_KEY.encode(),), "test")
    good = sign(body, "job", keys)
    messages = {
        "unsigned": body,
        "other-key": sign(body, "job", FarmKeys((b"not-the-farm-key-" * 3,), "other")),
        "expired": sign(body, "job", keys, now=time.time() - 8 * 24 * 3600),
        "good": good,
    }
    app = make_app(farm.url)
    raw = redis_client(farm.url)
    log = farm.hosts[0].log_dir / "phone-a.log"

    def send(name: str, message: dict) -> str:
        task_id = f"{run_id}.{name}"
        with app.connection_for_write() as conn:
            app.send_task(TASK_NAME, args=[message], task_id=task_id, queue="device.phone-a",
                          routing_key="device.phone-a", connection=conn)
        return task_id

    def records() -> list[dict]:
        notes = [json.loads(n)["env"]["body"] for n in raw.lrange(events_key(run_id), 0, -1)]
        return [n["record"] for n in notes if n["kind"] in ("record", "rejected")]

    try:
        refused = [send(name, m) for name, m in messages.items() if name != "good"]
        send("good", good)
        deadline = time.monotonic() + 120
        while not records():
            assert time.monotonic() < deadline, log.read_text(errors="replace")[-3000:]
            time.sleep(0.2)
        [record] = records()
        assert record["status"] == "ok" and record["job_id"] == job.job_id, record.get("reason")
        raw.delete(done_key(run_id))  # whoever holds the broker can clear what it knows of finished jobs
        refused.append(send("replay", good))  # the very message that ran, sent again
        for task_id in refused:
            wait_log(log, f"refused message {task_id}", timeout=60)
        text = log.read_text(errors="replace")
        assert "not signed" in text and "does not hold" in text and "expired" in text and "a replay" in text
        time.sleep(1)
        assert len(records()) == 1  # the replay ran nothing
    finally:
        raw.delete(events_key(run_id), done_key(run_id))

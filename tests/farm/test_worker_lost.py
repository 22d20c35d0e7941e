"""A dead worker host's job fails fast, by heartbeat; a live slow job is not declared lost.

The pure part (:class:`~melt.farm.heartbeat.LostJobs`) on synthetic beats and
clocks; the reading of heartbeats on a real Redis, hostile values included;
and end to end: two real `melt farm worker` hosts, one of them killed whole
(its process group, SIGKILL) mid-job, while the broker's visibility timeout
is hours.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from pathlib import Path

import pytest

from melt.farm.heartbeat import (BEAT_TTL_S, LOST_AFTER_S, LOST_BOUND_S, MAX_BEAT_BYTES, Beat, LostJobs,
                                 alive_key, beat, read_beats)
from melt.farm.signing import FarmKeys, sign
from tests.farm.conftest import FARM_KEY, Farm, phone_config
from tests.helpers import melt_child, show

KEYS = FarmKeys((FARM_KEY.encode(),), "test")
OTHER = FarmKeys((b"a-key-that-is-not-the-farms-key-0123456789",), "attacker")
RUN = "20261208-000000-beef"
JOB, JOB2 = "0123456789abcdef", "fedcba9876543210"


# ---------------------------------------------------------------- pure: LostJobs


def test_a_started_job_that_stops_beating_is_lost_after_the_silence_and_only_then():
    lost = LostJobs(lost_after_s=20)
    pending = {JOB, JOB2}
    assert lost.observe({}, pending, now=0) == {}  # JOB2 never beats: never started, never lost
    assert lost.observe({JOB: Beat("host-a", 1000.0)}, pending, now=1) == {}
    assert lost.started(JOB) and not lost.started(JOB2)
    # fresh beats keep it alive for far longer than the silence allowed
    for t in range(5, 200, 5):
        assert lost.observe({JOB: Beat("host-a", 1000.0 + t)}, pending, now=1 + t) == {}
    last = 1 + 195
    assert lost.observe({}, pending, now=last + 19.5) == {}
    found = lost.observe({}, pending, now=last + 20)
    assert found == {JOB: "worker lost (no heartbeat from host-a for 20 s); `melt run --resume` runs it again"}
    assert lost.observe({}, pending, now=last + 60) == {}  # reported once
    assert not lost.started(JOB2)


def test_a_beat_written_again_keeps_nothing_alive_but_another_host_taking_over_does():
    lost = LostJobs(lost_after_s=20)
    pending = {JOB}
    old = Beat("host-a", 500.0)
    lost.observe({JOB: Beat("host-a", 510.0)}, pending, now=0)
    # the same beat, and an older one, copied back onto the key: not fresh
    for t in (5, 10, 15):
        assert lost.observe({JOB: Beat("host-a", 510.0) if t != 10 else old}, pending, now=t) == {}
    assert JOB in lost.observe({JOB: Beat("host-a", 510.0)}, pending, now=20)
    # a redelivery to another host whose clock is behind: its first beat is fresh
    lost = LostJobs(lost_after_s=20)
    lost.observe({JOB: Beat("host-a", 510.0)}, pending, now=0)
    assert lost.observe({JOB: Beat("host-b", 100.0)}, pending, now=15) == {}
    assert lost.observe({JOB: Beat("host-b", 105.0)}, pending, now=30) == {}
    assert "host-b" in lost.observe({}, pending, now=50)[JOB]


def test_a_job_no_longer_pending_is_forgotten():
    lost = LostJobs(lost_after_s=20)
    lost.observe({JOB: Beat("h", 1.0)}, {JOB}, now=0)
    assert lost.observe({}, set(), now=100) == {}  # its record came: nothing to report
    assert not lost.started(JOB)


def test_the_stated_bound_covers_the_worst_case():
    from melt.farm.heartbeat import BEAT_INTERVAL_S, CHECK_INTERVAL_S

    poll_s = 1.0  # FarmPool's default wait on the run's list between checks
    assert LOST_AFTER_S > BEAT_INTERVAL_S + CHECK_INTERVAL_S + poll_s  # a live host is never late enough
    assert LOST_AFTER_S + 2 * (CHECK_INTERVAL_S + poll_s) <= LOST_BOUND_S
    assert BEAT_TTL_S >= LOST_AFTER_S  # a live job's key never expires between beats


# ---------------------------------------------------------------- heartbeats on a real Redis


@pytest.mark.redis
def test_hostile_heartbeats_are_not_beats(redis_url):
    from melt.farm.app import redis_client

    raw = redis_client(redis_url, decode=False)
    beat(raw, KEYS, RUN, JOB, "phone", host="host-a")
    assert 0 < raw.ttl(alive_key(RUN, JOB)) <= BEAT_TTL_S
    got = read_beats(raw, KEYS, RUN, [JOB])
    assert got[JOB].host == "host-a" and abs(got[JOB].issued_at - time.time()) < 5

    body = {"run_id": RUN, "job_id": JOB, "device": "phone", "host": "host-a"}
    hostile = {
        "unsigned": json.dumps(body),
        "other key": json.dumps(sign(body, "heartbeat", OTHER)),
        "a note, not a heartbeat": json.dumps(sign(body, "note", KEYS)),
        "another job's beat": json.dumps(sign({**body, "job_id": JOB2}, "heartbeat", KEYS)),
        "another run's beat": json.dumps(sign({**body, "run_id": "other-run"}, "heartbeat", KEYS)),
        "not JSON": "\xff{{{",
        "huge": json.dumps(sign({**body, "pad": "x" * MAX_BEAT_BYTES}, "heartbeat", KEYS)),
        "a list": "[1, 2]",
        "no host": json.dumps(sign({k: v for k, v in body.items() if k != "host"}, "heartbeat", KEYS)),
    }
    for what, value in hostile.items():
        raw.set(alive_key(RUN, JOB), value)
        assert read_beats(raw, KEYS, RUN, [JOB]) == {}, what
    raw.set(alive_key(RUN, JOB), json.dumps(sign({**body, "host": "[red]x\n"}, "heartbeat", KEYS)))
    assert read_beats(raw, KEYS, RUN, [JOB])[JOB].host == "?red?x?"  # shown as text, one line
    raw.delete(alive_key(RUN, JOB))
    assert read_beats(raw, KEYS, RUN, [JOB, JOB2]) == {}
    # many pending jobs are read in batches
    ids = [f"{i:016x}" for i in range(1200)]
    for job_id in ids[::100]:
        beat(raw, KEYS, RUN, job_id, "phone", host="h")
    assert sorted(read_beats(raw, KEYS, RUN, ids)) == ids[::100]


# ---------------------------------------------------------------- end to end: a dead host

EXPERIMENT = """
name: lost
devices: [phone-x, phone-y, phone-z]
models: [{name: tiny, tiny_seed: 7}]
workloads:
  - {name: gen, kind: generate, prompt: "Hello", n_predict: 4, threads: 1}
repetitions: 1
warmup: 0
"""
#: Each job waits this long for a cool-down that never comes (the phones stay above 0 C), then runs.
SLOW_S = 40


@pytest.fixture(scope="module")
def lost_farm(redis_url, adb_server, tmp_path_factory):  # noqa: F811
    """Three hosts, one virtual phone each, whose jobs take over SLOW_S s."""
    from melt.devices.abi import host_abi
    from melt.frameworks.llamacpp.build import host_build
    from melt.virtual.config import VirtualPhoneConfig
    from melt.virtual.testing import virtual_phone

    host_build()
    tmp = tmp_path_factory.mktemp("lost")
    configs = tmp / "device_configs"
    configs.mkdir()
    with contextlib.ExitStack() as stack:
        phones = {}
        for name in ("phone-x", "phone-y", "phone-z"):
            phone = stack.enter_context(virtual_phone(VirtualPhoneConfig(abi=host_abi()),
                                                      state_dir=tmp / f"state-{name}"))
            adb_server.connect(phone.address)
            (configs / f"{name}.yaml").write_text(
                phone_config(name, phone.address, adb_server.port)
                + f"cooldown: {{max_temp_c: 0, timeout_s: {SLOW_S}, poll_s: 1, on_timeout: run}}\n")
            phones[name] = phone
        farm = Farm(redis_url, configs, phones, tmp / "models", adb=adb_server)
        farm.start_host(["phone-x"], tmp)
        farm.start_host(["phone-y"], tmp)
        farm.start_host(["phone-z"], tmp)
        try:
            farm.wait_online(["phone-x", "phone-y", "phone-z"])
            yield farm
        finally:
            for host in farm.hosts:
                host.stop()


def group_members(pgid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                out.append(int(stat.parent.name))
    return out


@pytest.mark.adb
@pytest.mark.redis
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_killed_host_job_fails_as_worker_lost_within_the_bound_and_slow_live_jobs_do_not(lost_farm, tmp_path):
    from melt.farm.app import redis_client
    from melt.farm.registry import RUNNING_KEY, farm_status

    client = redis_client(lost_farm.url)
    timeouts = {e.device: float(e.info["visibility_timeout_s"]) for e in farm_status(client)}
    assert timeouts["phone-x"] >= 3600  # the broker alone would bring the job back only after hours
    exp = tmp_path / "lost.yaml"
    exp.write_text(EXPERIMENT)
    results = tmp_path / "r"
    proc = melt_child("run", str(exp), "--farm", lost_farm.url, "--results", str(results))
    victim_host = lost_farm.hosts[0]
    try:
        running = {}
        deadline = time.monotonic() + 120
        while not {"phone-x", "phone-y", "phone-z"} <= set(running):
            assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read() if proc.poll() else ""
            running = {d: json.loads(v) for d, v in client.hgetall(RUNNING_KEY).items()}
            time.sleep(0.1)
        victim = running["phone-x"]
        time.sleep(6)  # the job is well under way: the supervisor has beaten for it
        assert client.exists(alive_key(victim["run_id"], victim["job_id"]))
        os.killpg(victim_host.proc.pid, signal.SIGKILL)  # the whole host: supervisor, worker, job process
        killed_at = time.monotonic()
        lost_farm.hosts[2].proc.send_signal(signal.SIGTERM)  # stopped with care: phone-z's job ends first
        victim_host.proc.wait(10)
        deadline = time.monotonic() + 5
        while group_members(victim_host.proc.pid):
            assert time.monotonic() < deadline, group_members(victim_host.proc.pid)
            time.sleep(0.1)

        journal = results / victim["run_id"] / "journal.jsonl"
        recorded_after = None
        while recorded_after is None:
            if journal.is_file() and victim["job_id"] in journal.read_text():
                recorded_after = time.monotonic() - killed_at
                break
            assert time.monotonic() - killed_at < LOST_BOUND_S + 30, "the lost job was not recorded"
            time.sleep(0.2)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 3, err  # finished, one job failed
    assert err.count("worker lost") == 1, err
    assert recorded_after <= LOST_BOUND_S, recorded_after
    assert recorded_after >= LOST_AFTER_S - 10, recorded_after  # by the silence, not by anything sooner
    jobs = {j["device"]: j for j in show(victim["run_id"], results)["jobs"]}
    lost = jobs["phone-x"]
    assert lost["status"] == "failed" and lost["job_id"] == victim["job_id"]
    assert lost["reason"].startswith(f"worker lost (no heartbeat from {victim['host']} for "), lost["reason"]
    # the other host's job ran longer than a heartbeat lives and was not declared lost
    live = jobs["phone-y"]
    assert live["status"] == "ok", live["reason"]
    from datetime import datetime

    took = (datetime.fromisoformat(live["finished_at"]) - datetime.fromisoformat(live["started_at"])).total_seconds()
    assert took > SLOW_S > BEAT_TTL_S + 10, took
    # so did the job of the host told to stop, which its worker finished before stopping
    stopped = jobs["phone-z"]
    assert stopped["status"] == "ok", stopped["reason"]
    assert lost_farm.hosts[2].proc.wait(30) == 0
    # the lost job is marked done for the run: its message, if it is ever delivered again, runs nothing
    from melt.farm.registry import done_key

    assert client.sismember(done_key(victim["run_id"]), victim["job_id"])
    assert not client.exists(alive_key(victim["run_id"], live["job_id"]))  # its record's note cleared it

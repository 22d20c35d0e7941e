"""Job messages a worker must refuse, given to the worker's own task function on a real Redis.

A refused message leaves no trace but its log line when it cannot be
verified (nothing of it is trusted, not even the run it names), and a
failed record with the reason when it verifies but asks for something this
worker's host does not allow. Either way no device is opened, nothing is
fetched or built, and nothing runs.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest

from melt.farm.signing import FarmKeys, MessageRefused, sign
from tests.farm.conftest import FARM_KEY

pytestmark = [pytest.mark.redis, pytest.mark.timeout(60)]

KEYS = FarmKeys((FARM_KEY.encode(),), "test")
RUN_ID = "20260101-000000-beef"


@pytest.fixture
def worker_env(redis_url, tmp_path, monkeypatch):
    """A worker's surroundings: its own cache (to see nothing is fetched or built), a fresh replay store."""
    import melt.farm.task as task
    from melt.config.loader import validate
    from melt.config.specs import DeviceSpec
    from melt.farm.app import redis_client
    from melt.farm.registry import done_key, events_key
    from melt.farm.replay import SeenMessages

    monkeypatch.setenv("MELT_CACHE_DIR", str(tmp_path / "cache"))
    spec = validate(DeviceSpec, {"name": "phone-x", "kind": "android", "adb": {"serial": "no-such-phone"}},
                    "test")
    client = redis_client(redis_url)
    seen = SeenMessages(tmp_path / "seen.db")
    models = tmp_path / "models"
    models.mkdir()

    class Env:
        def run(self, message, *, allowed=(), task_id="t-1"):
            return task.execute_payload(message, task_id=task_id, spec=spec, client=client, keys=KEYS, seen=seen,
                                        allowed_sources=tuple(allowed), models_dir=models)

        def notes(self) -> list[dict]:
            return [json.loads(n)["env"]["body"] for n in client.lrange(events_key(RUN_ID), 0, -1)]

        def nothing_ran(self) -> None:
            assert "worker" not in task._current  # no DeviceWorker: no device opened, nothing staged
            cache = tmp_path / "cache"
            made = {p.relative_to(cache).parts[0] for p in cache.rglob("*")} if cache.exists() else set()
            assert not made & {"sources", "builds", "downloads", "models"}, made

    env = Env()
    env.models = models
    env.client = client
    task.close_current()
    yield env
    task.close_current()
    seen.close()
    client.delete(events_key(RUN_ID), done_key(RUN_ID))


def body(framework: dict | None = None, model: dict | None = None, **extra) -> dict:
    from melt import __version__
    from melt.config.specs import ExperimentSpec
    from melt.runner.matrix import expand

    exp = ExperimentSpec.model_validate({
        "name": "e", "devices": ["phone-x"], "frameworks": [framework or {}],
        "models": [model or {"name": "tiny", "tiny_seed": 1}],
        "workloads": [{"name": "g", "kind": "generate", "prompt": "hi", "n_predict": 2}],
        "repetitions": 1, "warmup": 0, **extra})
    hashes = {"tiny": "ab" * 32}
    job = expand(exp, hashes)[0]
    return {"run_id": RUN_ID, "job_id": job.job_id, "experiment": exp.model_dump(mode="json"),
            "model_hashes": hashes, "melt_version": __version__}


@pytest.mark.parametrize("make, why", [
    (lambda: body(), "not signed"),
    (lambda: sign(body(), "job", FarmKeys((b"x" * 40,), "other")), "a key this host does not hold"),
    (lambda: sign(body(), "job", KEYS, now=time.time() - 8 * 24 * 3600), "expired"),
    (lambda: sign(body(), "note", KEYS), "not a 'job' one"),  # a signed note is not a job
    (lambda: {**sign(body(), "job", KEYS), "sig": "0" * 64}, "signature does not match"),
    (lambda: altered(sign(body(), "job", KEYS)), "signature does not match"),
    (lambda: sign(body(description="x" * (5 << 20)), "job", KEYS), "over the limit"),
    (lambda: sign({**body(), "job_id": "../../etc"}, "job", KEYS), "job id is not one melt makes"),
])
def test_unverifiable_messages_are_refused_and_leave_nothing(worker_env, make, why):
    with pytest.raises(MessageRefused, match=why):
        worker_env.run(make())
    assert worker_env.notes() == []  # not even a note on the run it names
    worker_env.nothing_ran()


def altered(message: dict) -> dict:
    """The signed message with its framework pointed at another source (the signature kept)."""
    message["body"]["experiment"]["frameworks"][0]["source"] = "git+https://example.invalid/llama.cpp@main"
    return message


def test_a_replayed_message_is_refused_even_when_the_broker_forgets_it_ran(worker_env):
    from melt.farm.registry import done_key

    message = sign({**body(), "job_id": "0" * 16}, "job", KEYS)  # verifies, names no job of its experiment
    assert worker_env.run(message) == "rejected: unknown job id"
    assert [n["kind"] for n in worker_env.notes()] == ["rejected"]
    worker_env.client.delete(done_key(RUN_ID))  # whoever holds the broker can clear what it knows
    with pytest.raises(MessageRefused, match="already run on this host"):
        worker_env.run(message, task_id="t-2")
    assert len(worker_env.notes()) == 1


@pytest.mark.parametrize("framework, why", [
    ({"source": "git+https://example.invalid/llama.cpp@main"}, "frameworks[0].source: 'git+https"),
    ({"source": "/tmp"}, "frameworks[0].source: '/tmp' is not the pinned source"),
    ({"source": "pypi:0.3.36#sha256=" + "1" * 64}, "is not the pinned source"),
    ({"binaries": "/usr/bin"}, "frameworks[0].binaries: a farm worker runs only what it builds"),
    ({"name": "mlc-llm", "source": "git+https://example.invalid/x"}, "frameworks[0].source"),
])
def test_sources_and_binaries_the_worker_does_not_allow_fail_the_job_before_anything_is_built(
        worker_env, framework, why):
    result = worker_env.run(sign(body(framework), "job", KEYS))
    assert result.startswith("rejected:")
    [note] = worker_env.notes()
    assert note["kind"] == "rejected" and why in note["reason"], note["reason"]
    worker_env.nothing_ran()


def test_the_workers_own_allowlist_and_the_pinned_source_pass():
    from melt.farm.policy import is_pinned_default, refusals
    from melt.frameworks.llamacpp.recipe import load_recipe
    from melt.config.specs import ExperimentSpec

    pin = load_recipe().source.pypi
    assert is_pinned_default(None) and is_pinned_default("pypi")
    assert is_pinned_default(f"pypi:{pin.version}") and is_pinned_default(f"pypi:{pin.version}#sha256={pin.sha256}")
    assert not is_pinned_default("git") and not is_pinned_default("pypi:0.0.1")
    own = "git+https://example.invalid/llama.cpp@" + "a" * 40
    exp = ExperimentSpec.model_validate(body({"source": own})["experiment"])
    assert refusals(exp, [own]) == []
    assert refusals(exp, []) != []


def test_a_path_model_is_found_by_sha256_in_the_workers_folder_never_at_the_messages_path(worker_env, tmp_path):
    secret = tmp_path / "secret.gguf"
    secret.write_bytes(b"GGUF not for the device")
    sha = hashlib.sha256(secret.read_bytes()).hexdigest()
    message = body(model={"name": "tiny", "path": str(secret)})
    from melt.config.specs import ExperimentSpec
    from melt.runner.matrix import expand

    message["model_hashes"] = {"tiny": sha}
    message["job_id"] = expand(ExperimentSpec.model_validate(message["experiment"]), {"tiny": sha})[0].job_id
    assert worker_env.run(sign(message, "job", KEYS)).startswith("failed")
    record = next(n for n in worker_env.notes() if n["kind"] == "record")["record"]
    assert record["status"] == "failed"
    assert f"is not in this worker's models folder {worker_env.models}" in record["reason"], record["reason"]
    assert list(Path(worker_env.models).iterdir()) == []

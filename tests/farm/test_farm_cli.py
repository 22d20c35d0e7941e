"""Farm commands on bad input, and the pieces that need no device."""

from __future__ import annotations

import json

import pytest

from melt.farm.app import safe_url
from melt.farm.task import pack_files, unpack_files
from melt.virtual.testing import free_port
from tests.farm.conftest import PASSWORD
from tests.helpers import error_line, melt

EXPERIMENT = """
name: farm-cli
devices: [{device}]
models: [{{name: tiny, tiny_seed: 1}}]
workloads: [{{name: g, kind: generate, prompt: hi, n_predict: 2}}]
repetitions: 1
"""


def test_safe_url_hides_passwords_only():
    assert safe_url(f"redis://:{PASSWORD}@host:6379/0") == "redis://:***@host:6379/0"
    assert safe_url(f"rediss://user:{PASSWORD}@host/1") == "rediss://user:***@host/1"
    assert safe_url("redis://host:6379/0") == "redis://host:6379/0"


def test_files_travel_compressed_and_come_back_identical():
    files = {"stdout.txt": b"tokens " * 1000, "trace.parquet": bytes(range(256)) * 10}
    packed = pack_files(files)
    assert len(packed["stdout.txt"]) < 200  # compressed
    assert unpack_files(json.loads(json.dumps(packed))) == files


def test_bad_broker_urls_are_one_line_errors_without_the_password(tmp_path):
    exp = tmp_path / "e.yaml"
    exp.write_text(EXPERIMENT.format(device="phone-a"))
    out = melt("run", str(exp), "--farm", f"http://:{PASSWORD}@host/0", "--results", str(tmp_path / "r"))
    assert out.returncode == 1 and "expected redis://" in out.stderr
    assert PASSWORD not in out.stderr and len(out.stderr.strip().splitlines()) == 1
    dead = f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0"
    out = melt("run", str(exp), "--farm", dead, "--results", str(tmp_path / "r"))
    assert out.returncode == 1 and "unreachable" in out.stderr and "redis://:***@127.0.0.1" in out.stderr
    assert PASSWORD not in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").glob("*/manifest.json"))


def test_a_farm_run_names_devices_not_files(tmp_path):
    exp = tmp_path / "e.yaml"
    exp.write_text(EXPERIMENT.format(device="configs/phone.yaml"))
    out = melt("run", str(exp), "--farm", "redis://127.0.0.1:1/0", "--results", str(tmp_path / "r"))
    assert "devices[0]: a farm run names devices" in error_line(out)


def test_worker_with_an_unknown_device_is_one_line(tmp_path):
    (tmp_path / "configs").mkdir()
    out = melt("farm", "worker", "--broker", "redis://127.0.0.1:1/0", "--device", "nope",
               "--configs", str(tmp_path / "configs"))
    assert "no config for device 'nope'" in error_line(out)
    assert len(out.stderr.strip().splitlines()) == 1


def test_status_of_an_empty_farm(redis_url):
    out = melt("farm", "status", "--broker", redis_url)
    assert out.returncode == 0, out.stderr
    assert "no devices are advertised" in out.stdout
    out = melt("farm", "status", "--broker", redis_url, "--json")
    assert json.loads(out.stdout) == []


@pytest.mark.parametrize("args", [["farm", "--help"], ["farm", "worker", "--help"], ["farm", "status", "--help"]])
def test_help(args):
    out = melt(*args)
    assert out.returncode == 0 and "Usage" in out.stdout


def test_jobs_longer_than_a_workers_visibility_timeout_are_refused(redis_url, tmp_path):
    from melt.farm.app import redis_client
    from melt.farm.registry import advertise, withdraw

    client = redis_client(redis_url)
    advertise(client, "phone-z", "host-z", {"health": "online", "visibility_timeout_s": 900})
    try:
        exp = tmp_path / "e.yaml"
        exp.write_text(EXPERIMENT.format(device="phone-z") + "timeout_s: 300\n")  # 1 warm-up + 1 run, 2 windows
        out = melt("run", str(exp), "--farm", redis_url, "--results", str(tmp_path / "r"))
        message = error_line(out)
        assert "a job may take up to 1200 s" in message and "--visibility-timeout" in message
        assert not list((tmp_path / "r").glob("*/manifest.json"))
    finally:
        withdraw(client, "phone-z", "host-z")


def no_key_env(tmp_path) -> dict:
    return {"MELT_FARM_KEY": "", "MELT_FARM_KEY_FILE": "", "MELT_CONFIG_DIR": str(tmp_path / "config")}


def test_a_farm_without_a_key_is_one_line_saying_how_to_set_one(redis_url, tmp_path):
    exp = tmp_path / "e.yaml"
    exp.write_text(EXPERIMENT.format(device="phone-a"))
    env = no_key_env(tmp_path)
    run = melt("run", str(exp), "--farm", redis_url, "--results", str(tmp_path / "r"), env=env)
    (tmp_path / "phone-a.yaml").write_text("name: phone-a\nkind: android\nadb: {serial: x}\n")
    worker = melt("farm", "worker", "--broker", redis_url, "--device", "phone-a", "--configs", str(tmp_path),
                  env=env)
    for out in (run, worker):
        line = error_line(out)
        assert "no farm key" in line and "melt farm key new" in line and "MELT_FARM_KEY" in line, line
        assert PASSWORD not in out.stderr
    assert not list((tmp_path / "r").glob("*/manifest.json"))


def test_key_new_writes_a_private_key_rotation_keeps_the_old_one_verifying(tmp_path, monkeypatch):
    from melt.farm.signing import FarmKeyError, MessageRefused, load_keys, sign, verify

    env = no_key_env(tmp_path)
    out = melt("farm", "key", "new", env=env)
    assert out.returncode == 0, out.stderr
    path = tmp_path / "config" / "farm.key"
    assert str(path) in out.stdout and path.stat().st_mode & 0o777 == 0o600
    assert "already holds a farm key" in error_line(melt("farm", "key", "new", env=env))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    old = load_keys()
    message = sign({"x": 1}, "job", old)
    assert melt("farm", "key", "new", "--rotate", env=env).returncode == 0
    new = load_keys()
    assert len(new.keys) == 2 and new.keys[1] == old.signing and new.signing != old.signing
    assert verify(message, "job", new)["body"] == {"x": 1}  # in flight across the rotation
    path.write_text(new.signing.decode() + "\n")  # the old line dropped once its messages expired
    with pytest.raises(MessageRefused, match="does not hold"):
        verify(message, "job", load_keys())
    path.chmod(0o644)
    with pytest.raises(FarmKeyError, match="readable by others: chmod 600"):
        load_keys()
    monkeypatch.setenv("MELT_FARM_KEY", "short")
    with pytest.raises(FarmKeyError, match="shorter than 32"):
        load_keys()
    monkeypatch.setenv("MELT_FARM_KEY", "p" * 40)
    with pytest.raises(FarmKeyError, match="is the broker's password"):
        load_keys(f"redis://:{'p' * 40}@host:6379/0")


def test_secrets_in_broker_urls_are_masked_in_every_form():
    from melt.farm.app import FarmError, celery_url, check_url, mask_secrets

    assert safe_url(f"redis://host:6379/0?password={PASSWORD}") == "redis://host:6379/0?password=***"
    assert safe_url(f"redis://host/0?db=1&Token={PASSWORD}&ssl=1") == "redis://host/0?db=1&Token=***&ssl=1"
    assert safe_url(f"redis://{PASSWORD}@host/0") == "redis://***@host/0"
    assert safe_url("redis://host:99999/0") == "<unparseable URL>"
    with pytest.raises(FarmError, match="give the password as") as caught:
        check_url(f"redis://{PASSWORD}@host/0")  # Redis would take it as a user name
    assert PASSWORD not in str(caught.value)
    url = f"redis://:{PASSWORD}@host:1/0"
    assert mask_secrets(f"Error connecting to {url}: bad password {PASSWORD}", url) == \
        "Error connecting to redis://:***@host:1/0: bad password ***"
    # Celery's transport fails on a query password, and prints only an address password masked
    assert celery_url(f"redis://host:1/0?password={PASSWORD}") == f"redis://:{PASSWORD}@host:1/0"


def test_query_password_urls_are_masked_in_errors_and_status(redis_url, tmp_path):
    from tests.farm.conftest import query_form

    exp = tmp_path / "e.yaml"
    exp.write_text(EXPERIMENT.format(device="phone-a"))
    dead = f"redis://127.0.0.1:{free_port()}/0?password={PASSWORD}"
    out = melt("run", str(exp), "--farm", dead, "--results", str(tmp_path / "r"))
    assert "unreachable" in error_line(out) and "?password=***" in out.stderr and PASSWORD not in out.stderr
    out = melt("farm", "status", "--broker", query_form(redis_url))
    assert out.returncode == 0 and PASSWORD not in out.stdout + out.stderr

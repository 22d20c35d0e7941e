"""The farm on one machine (`melt farm up` / `down`), and commands without the farm extra."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.farm.conftest import phone_config
from tests.helpers import ROOT, error_line, melt

EXPERIMENT = """
name: farm-local
devices: [{device}]
models: [{{name: tiny, tiny_seed: 1}}]
workloads: [{{name: g, kind: generate, prompt: hi, n_predict: 2}}]
repetitions: 1
"""

# The farm extra's modules made impossible to import, as on a machine where only melt is installed.
BLOCK_FARM_EXTRA = """
import importlib.abc, sys
class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("celery", "redis", "kombu", "setproctitle"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
for name in [m for m in sys.modules if m.split(".")[0] in ("celery", "redis", "kombu", "setproctitle")]:
    del sys.modules[name]
sys.meta_path.insert(0, NotInstalled())
from melt.cli.main import main
main(sys.argv[1:])
"""


def melt_without_farm_extra(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK_FARM_EXTRA, *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120, env={**os.environ, **(env or {})})


@pytest.mark.parametrize("args", [
    ["farm", "status", "--broker", "redis://127.0.0.1:1/0"],
    ["farm", "up", "--device", "local"],
    ["farm", "worker", "--broker", "redis://127.0.0.1:1/0", "--device", "local"],
    ["run", "EXPERIMENT", "--farm", "redis://127.0.0.1:1/0"],
    ["run", "EXPERIMENT", "--farm"],
])
def test_a_command_without_the_farm_extra_says_how_to_install_it_in_one_line(args, tmp_path):
    exp = tmp_path / "e.yaml"
    exp.write_text(EXPERIMENT.format(device="local"))
    args = [str(exp) if a == "EXPERIMENT" else a for a in args]
    out = melt_without_farm_extra(*args, env={"MELT_FARM_STATE_DIR": str(tmp_path / "state")})
    line = error_line(out)  # exit 1, no traceback, one Error: line
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "needs melt's farm extra" in line and "pip install -e '" in line and "[farm]'" in line, line
    command = "melt run --farm" if args[0] == "run" else f"melt farm {args[1]}"
    assert line.startswith(f"Error: {command} needs"), line
    assert not (tmp_path / "state" / "farm.json").exists()


def test_the_farm_key_is_made_without_the_farm_extra(tmp_path):
    out = melt_without_farm_extra("farm", "key", "new", "--file", str(tmp_path / "k"))
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "k").stat().st_mode & 0o777 == 0o600


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] in ("Z", "X")
    except OSError:
        return True


@pytest.fixture
def local_env(tmp_path):
    """A private state folder and config folder (no farm key yet) for `melt farm up` and what follows."""
    env = {"MELT_FARM_STATE_DIR": str(tmp_path / "state"), "MELT_CONFIG_DIR": str(tmp_path / "config"),
           "MELT_FARM_KEY": "", "MELT_FARM_BROKER": "", "MELT_VIRTUAL_STATE_DIR": str(tmp_path / "virtual")}
    yield env
    melt("farm", "down", "--timeout", "30", env=env)  # whatever a failed test left running


@pytest.mark.redis
@pytest.mark.adb
def test_up_serves_running_virtual_phones_then_run_farm_status_and_down(local_env, adb_server, tmp_path):
    from melt.devices.abi import host_abi
    from melt.frameworks.llamacpp.build import host_build
    from melt.farm.testing import redis_available
    from melt.virtual.config import VirtualPhoneConfig
    from melt.virtual.testing import virtual_phone
    from tests.helpers import need

    need(redis_available(), "redis-server (apt-get install redis-server)")
    host_build()
    configs = tmp_path / "device_configs"
    configs.mkdir()
    (configs / "idle-phone.yaml").write_text(phone_config("idle-phone", "127.0.0.1:1", adb_server.port))
    with virtual_phone(VirtualPhoneConfig(abi=host_abi()), state_dir=tmp_path / "virtual") as phone:
        (configs / "phone-l.yaml").write_text(phone_config("phone-l", phone.address, adb_server.port))

        out = melt("farm", "up", "--configs", str(configs), "--interval", "1", env=local_env)
        assert out.returncode == 0, out.stdout + out.stderr
        state = tmp_path / "state"
        farm = json.loads((state / "farm.json").read_text())
        password = farm["broker"].split(":")[2].split("@")[0]
        assert len(password) >= 32 and farm["broker"].startswith("redis://:")
        assert password not in out.stdout + out.stderr
        # one worker, for the config whose virtual phone runs (not for the idle one)
        assert [w["device"] for w in farm["workers"]] == ["phone-l"]
        assert "worker of phone-l" in out.stdout and ": online" in out.stdout, out.stdout
        assert "redis://:***@127.0.0.1:" in out.stdout
        assert "wrote a new one to" in out.stdout
        key = tmp_path / "config" / "farm.key"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        assert stat.S_IMODE(state.stat().st_mode) == 0o700
        for name in ("farm.json", "redis.conf"):
            assert stat.S_IMODE((state / name).stat().st_mode) == 0o600
        assert _port_open(farm["port"])
        for pid in [farm["redis_pid"], *(w["pid"] for w in farm["workers"])]:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            assert password.encode() not in cmdline  # the password is in no process's command line

        again = melt("farm", "up", "--configs", str(configs), env=local_env)
        assert again.returncode == 0 and "already up" in again.stdout, again.stdout + again.stderr
        assert json.loads((state / "farm.json").read_text()) == farm

        exp = tmp_path / "e.yaml"
        exp.write_text(EXPERIMENT.format(device="phone-l"))
        results = tmp_path / "results"
        run = melt("run", str(exp), "--farm", "--results", str(results), env=local_env)
        assert run.returncode == 0, run.stderr
        assert password not in run.stdout + run.stderr
        run_id = run.stdout.strip().splitlines()[-1]
        manifest = json.loads((results / run_id / "manifest.json").read_text())
        assert manifest["executor"] == "farm" and manifest["executor_at"] == f"redis://:***@127.0.0.1:{farm['port']}/0"

        status = melt("farm", "status", "--json", env=local_env)
        assert status.returncode == 0, status.stderr
        assert [(e["device"], e["health"]) for e in json.loads(status.stdout)] == [("phone-l", "online")]

        down = melt("farm", "down", env=local_env)
        assert down.returncode == 0, down.stderr
        worker_pid = farm["workers"][0]["pid"]
        assert f"stopped the worker of phone-l (pid {worker_pid})" in down.stdout
        assert f"stopped redis-server on 127.0.0.1:{farm['port']} (pid {farm['redis_pid']})" in down.stdout
        assert _gone(worker_pid) and _gone(farm["redis_pid"]) and not _port_open(farm["port"])
        assert not (state / "farm.json").exists() and not (state / "redis.conf").exists()

        assert "not up" in melt("farm", "down", env=local_env).stdout
        assert "the local farm is not up" in error_line(melt("run", str(exp), "--farm", env=local_env))


def test_up_with_nothing_to_serve_is_one_line_and_starts_nothing(local_env, tmp_path):
    (tmp_path / "empty").mkdir()
    out = melt("farm", "up", "--configs", str(tmp_path / "empty"), env=local_env)
    assert "no device to serve" in error_line(out)
    assert not (tmp_path / "state" / "farm.json").exists()
    out = melt("farm", "up", "--device", "nope", "--configs", str(tmp_path / "empty"), env=local_env)
    assert "no config for device 'nope'" in error_line(out)


def test_a_state_file_melt_did_not_write_is_refused_in_one_line(local_env, tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    (state / "farm.json").write_text('{"broker": "redis://x", "workers": "none"}')
    assert "is not a local farm's record" in error_line(melt("farm", "down", env=local_env))
    (state / "farm.json").write_text("{" + " " * (1 << 20))
    assert "is not a local farm's record" in error_line(melt("farm", "status", env=local_env))


def test_a_bare_farm_before_the_experiment_is_explained(tmp_path):
    exp = tmp_path / "e.yaml"
    exp.write_text(EXPERIMENT.format(device="local"))
    out = melt("run", "--farm", str(exp))
    assert out.returncode == 1 and "a bare --farm goes after EXPERIMENT" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("args", [["farm", "up", "--help"], ["farm", "down", "--help"]])
def test_help(args):
    out = melt(*args)
    assert out.returncode == 0 and "Usage" in out.stdout

"""Every quick start in experiments/ runs green on the device its own comments tell a user to start.

A quick start's comments name its device: ``melt virtual start android``
(the virtual phone as that command serves it: ``device_configs/
virtual-phone.yaml``, ABI arm64-v8a, so the arm64 build under qemu-user on
an x86-64 machine), ``melt virtual start jetson`` (the virtual Jetson behind
a real sshd, trusted as the comments say), ``melt virtual start ios`` (the
virtual iPhone and its app), or none for ``devices: [local]``.
A kind melt has no virtual device for yet is skipped, saying so.

Each quick start runs through ``melt run`` as shipped, its device config
pointed at this module's device and its sizes cut to fit the suite's time
(one repetition, no warm-up, 16 prompt and 8 generated tokens). Its
catalogue models are kept (fetched once into melt's cache); a model file
it expects to be made first (``make demo``'s Q8_0 variant) is left out:
the same network requantized, it adds time and no new path. The virtual
devices are shared by the module and the llama.cpp builds are the cached
ones (the arm64 build takes several minutes the first time).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from melt.devices.abi import host_abi
from tests.conftest_models import gemma_model  # noqa: F401
from tests.helpers import ROOT, last_line, melt, show
from tests.ssh.conftest import jetson, melt_config, write_device_config  # noqa: F401

pytestmark = pytest.mark.slow

QUICKSTARTS = sorted((ROOT / "experiments").glob("quickstart*.yaml"))
#: the config file each virtual device is served from, and the device name quick starts give it
VIRTUAL = {"android": "virtual-phone", "jetson": "virtual-jetson", "ios": "virtual-iphone"}


def named_device(path: Path) -> str:
    """The device kind a quick start's comments tell a user to start (``local`` when none)."""
    for line in path.read_text().splitlines():
        found = re.match(r"\s*#.*\bmelt virtual start (\w+)", line)
        if found:
            return found.group(1)
    return "local"


def virtual_kinds() -> set[str]:
    """The kinds ``melt virtual start`` can start."""
    from melt.cli.virtual_cmd import start

    return set(start.commands)


def test_every_quick_start_names_a_device_it_runs_on():
    assert QUICKSTARTS, "no experiments/quickstart*.yaml"
    named = {p.stem: named_device(p) for p in QUICKSTARTS}
    assert named["quickstart"] == "local" and named["quickstart-mlc"] == "android"
    for path in QUICKSTARTS:
        devices = yaml.safe_load(path.read_text())["devices"]
        kind = named[path.stem]
        want = VIRTUAL.get(kind, f"virtual-{kind}") if kind != "local" else "local"
        assert devices == [want], f"{path.name}: its comments start {kind}, it runs on {devices}"


@pytest.fixture(scope="module")
def phone(adb_server, tmp_path_factory):
    """The virtual phone ``melt virtual start android`` serves (its default config), on a free port."""
    from melt.virtual.config import load_config
    from melt.virtual.phone import VirtualPhone

    device = VirtualPhone(load_config(ROOT / "device_configs" / "virtual-phone.yaml"), port=0,
                          state_dir=tmp_path_factory.mktemp("quickstart-phone"))
    device.start()
    yield device
    device.stop()


def _phone_folder(request, folder: Path) -> None:
    """``folder/device_configs/virtual-phone.yaml`` pointed at the module's phone."""
    board = request.getfixturevalue("phone")
    adb = request.getfixturevalue("adb_server")
    if host_abi() != "arm64-v8a":  # the phone's build, made (once, cached) outside the run's time limit
        from melt.frameworks.llamacpp.build import build_llamacpp

        build_llamacpp("arm64")
    doc = yaml.safe_load((ROOT / "device_configs" / "virtual-phone.yaml").read_text())
    doc["adb"] = {"connect": board.address, "server_port": adb.port, "reconnect_timeout_s": 5}
    doc["telemetry"]["idle_s"] = 0.5
    path = folder / "device_configs" / "virtual-phone.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc))


def _jetson_folder(request, folder: Path) -> None:
    """``folder/device_configs/virtual-jetson.yaml`` pointed at the module's Jetson, trusted."""
    board = request.getfixturevalue("jetson")
    write_device_config(folder, board)
    trusted = melt("devices", "trust", "virtual-jetson", cwd=folder)
    assert trusted.returncode == 0, trusted.stderr


@pytest.fixture(scope="module")
def iphone(tmp_path_factory):
    """The virtual iPhone ``melt virtual start ios`` serves (its default config), on a free port."""
    from melt.virtual.iphone import VirtualIphone

    device = VirtualIphone(ROOT / "device_configs" / "virtual-iphone.yaml", port=0,
                           state_dir=tmp_path_factory.mktemp("quickstart-iphone"))
    device.start()
    yield device
    device.stop()


def _iphone_folder(request, folder: Path) -> None:
    """``folder/device_configs/virtual-iphone.yaml`` pointed at the module's iPhone."""
    board = request.getfixturevalue("iphone")
    doc = yaml.safe_load((ROOT / "device_configs" / "virtual-iphone.yaml").read_text())
    doc["ios"]["virtual"] = board.address
    doc["cooldown"] = {"timeout_s": 60, "poll_s": 0.5}
    path = folder / "device_configs" / "virtual-iphone.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc))


SETUP = {"android": _phone_folder, "jetson": _jetson_folder, "ios": _iphone_folder,
         "local": lambda request, folder: None}


def shrunk(path: Path, folder: Path) -> tuple[Path, int]:
    """The quick start in ``folder/experiments`` with small sizes; (its path, the jobs it makes)."""
    doc = yaml.safe_load(path.read_text())
    doc["models"] = [m for m in doc["models"] if "catalog" in m]
    assert doc["models"], f"{path.name}: no catalogue model"
    jobs = 0
    for w in doc["workloads"]:
        if w["kind"] == "bench":
            w.update(n_prompt=[16], n_gen=[8])
            jobs += len(w.get("threads") or [None])
        elif w["kind"] == "generate":
            w.update(n_predict=8)
            jobs += 1
        else:
            pytest.fail(f"{path.name}: workload kind {w['kind']} has no small size here yet")
    doc.update(repetitions=1, warmup=0)
    out = folder / "experiments" / path.name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(doc, sort_keys=False))
    return out, jobs * len(doc["models"])


@pytest.mark.parametrize("path", [
    pytest.param(p, id=p.stem, marks=[pytest.mark.adb] if named_device(p) == "android" else [])
    for p in QUICKSTARTS])
def test_quick_start_runs_green_on_the_device_its_comments_name(path, request, tmp_path, gemma_model):
    kind = named_device(path)
    if kind != "local" and kind not in virtual_kinds():
        pytest.skip(f"{path.name} runs on a {kind} device, and melt has no virtual {kind} device yet")
    if kind not in SETUP:
        pytest.fail(f"{path.name}: melt virtual start {kind} exists; start it here to test the quick start")
    SETUP[kind](request, tmp_path)
    experiment, expected_jobs = shrunk(path, tmp_path)
    results = tmp_path / "results"
    out = melt("run", str(experiment), "--results", str(results), cwd=tmp_path, timeout=1200)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    run_id = last_line(out.stdout)
    data = show(run_id, results)
    assert [j["reason"] for j in data["jobs"] if j["status"] != "ok"] == []
    assert data["status"] == "complete" and len(data["jobs"]) == expected_jobs
    for job in data["jobs"]:
        assert job["metrics"]["decode_tps"] > 0, job["metrics"]
        build = job["provenance"]["framework_build"]
        if job.get("stand_in"):  # MLC's stand-in: the llama.cpp build doing its work
            build = build["llama.cpp"]
        if kind == "android":  # the phone's own ABI, under qemu-user unless this machine is arm64
            assert build["abi"] == "arm64-v8a", build
            assert job["emulated"] is (host_abi() != "arm64-v8a")
    shown = melt("results", "show", run_id, "--results", str(results), cwd=tmp_path)
    line = next(x for x in shown.stdout.splitlines() if x.startswith("provenance of"))
    assert "None" not in line and "?" not in line, line

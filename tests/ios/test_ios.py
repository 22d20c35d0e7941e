"""The iPhone path against a fake of the service layer (no iPhone is attached here).

What is real: the app bundle's Info.plist, a launched process that writes its
own files, llama.cpp's llama-bench doing the work, melt's parser reading it.
What is fake: usbmux/lockdown/DVT/AFC (``tests/ios/fake_services.py``).
"""

from __future__ import annotations

import plistlib
import shlex
import shutil
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from melt.config.specs import DeviceSpec
from melt.devices.ios import ENERGY_NOTE, IosDevice, energy_impact_metrics
from melt.errors import CommandTimeout, TransportError
from melt.transports.ios import IosTransport, attached_iphones
from tests.ios.fake_services import FakeIosServices

DATA = Path(__file__).parent / "data"
BUNDLE = "org.melt.bench"


def make_app(tmp_path: Path, script: Path, bundle_id: str = BUNDLE) -> Path:
    app = tmp_path / "MeltBench.app"
    app.mkdir()
    shutil.copy(script, app / "MeltBench")
    (app / "MeltBench").chmod(0o755)
    (app / "Info.plist").write_bytes(plistlib.dumps(
        {"CFBundleIdentifier": bundle_id, "CFBundleExecutable": "MeltBench", "CFBundleName": "MeltBench"}))
    return app


@pytest.fixture
def phone(tmp_path: Path):
    services = FakeIosServices(tmp_path / "phone")
    spec = DeviceSpec(name="iphone", kind="ios")
    device = IosDevice(spec, IosTransport(services, services.device["udid"], BUNDLE))
    yield device, services
    for proc in services.procs.values():
        if proc.poll() is None:
            proc.kill()


def test_no_shell_on_an_iphone(phone):
    device, _ = phone
    with pytest.raises(TransportError, match="runs no shell"):
        device.transport.run(["echo", "hi"])


def test_paths_stay_inside_documents(phone, tmp_path):
    device, services = phone
    device.transport.install(make_app(tmp_path, DATA / "MeltBench.sh"))
    f = tmp_path / "x.txt"
    f.write_text("x")
    for bad in ("../escape", "/etc/passwd", "a/../../b", ""):
        with pytest.raises(TransportError, match="not a path inside"):
            device.transport.push(f, bad)
    assert not (services.root / "containers" / "escape").exists()


def test_properties_name_the_phone_and_label_energy(phone):
    device, _ = phone
    props = device.properties()
    assert props["model"] == "iPhone15,2" and props["os"] == "iOS 17.5.1"
    assert "not joules" in props["energy"]


def test_stage_sends_a_file_once(phone, tmp_path):
    device, services = phone
    device.transport.install(make_app(tmp_path, DATA / "MeltBench.sh"))
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF" + bytes(1000))
    remote = device.stage(model, category="models")
    assert remote == "melt/models/m.gguf"
    pushed = device.transport.bytes_pushed
    assert device.stage(model, category="models") == remote
    assert device.transport.bytes_pushed == pushed  # second time: nothing sent
    model.write_bytes(b"GGUF" + bytes(999) + b"x")  # same name, new bytes: sent again
    device.stage(model, category="models")
    assert device.transport.bytes_pushed > pushed


def test_launch_needs_an_installed_app(phone):
    device, _ = phone
    with pytest.raises(TransportError, match="not installed"):
        device.run_app(["-h"], out_dir="melt/out/1", timeout_s=5)


def test_a_hung_app_times_out_and_is_stopped(phone, tmp_path):
    device, services = phone
    hang = tmp_path / "hang.sh"
    hang.write_text("#!/bin/sh\nexec sleep 60\n")
    device.transport.install(make_app(tmp_path, hang))
    with pytest.raises(CommandTimeout):
        device.run_app([], out_dir="melt/out/1", timeout_s=1.0, sample_every_s=0.2)
    assert len(services.procs) == 1  # it was launched, and then stopped
    assert all(p.poll() is not None for p in services.procs.values())


def test_a_detached_phone_is_unavailable(phone):
    device, services = phone
    services.attached = False
    with pytest.raises(TransportError, match="no iPhone"):
        device.properties()


def test_energy_impact_is_labelled_never_joules():
    m = energy_impact_metrics([{"energy_impact": 2.0}, {"energy_impact": 4.0}, {"t_s": 1}])
    assert m == {"energy_impact_mean": 3.0, "energy_impact_max": 4.0, "energy_impact_note": ENERGY_NOTE}
    assert not any(k.endswith("_j") for k in m)
    assert energy_impact_metrics([]) == {}


def test_without_pymobiledevice3_melt_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "pymobiledevice3", None)  # import fails
    found, note = attached_iphones()
    assert found == [] and "pip install" in note and "pymobiledevice3" in note


def test_melt_devices_says_when_iphones_cannot_be_listed(monkeypatch):
    from melt.cli.main import cli

    monkeypatch.setitem(sys.modules, "pymobiledevice3", None)
    result = CliRunner().invoke(cli, ["devices", "--json"])
    assert result.exit_code == 0, result.output
    import json

    data = json.loads(result.output)
    assert data["iphones"] == [] and "pymobiledevice3" in data["iphones_note"]


def test_melt_devices_lists_an_attached_iphone(monkeypatch, tmp_path):
    import melt.transports.ios as ios

    services = FakeIosServices(tmp_path / "phone")
    monkeypatch.setattr(ios, "Pymobiledevice3Services", lambda: services)
    from melt.cli.main import cli

    result = CliRunner().invoke(cli, ["devices", "--json"])
    import json

    data = json.loads(result.output)
    assert [d["product_type"] for d in data["iphones"]] == ["iPhone15,2"]
    assert data["iphones_note"] is None


@pytest.mark.slow
def test_benchmark_app_runs_llama_bench_and_melt_reads_it(phone, tmp_path, llamacpp_build, tiny_model):
    """The whole iPhone flow: install, stage the model, launch with llama-bench's
    arguments, wait for the app's files, pull them, parse them."""
    from melt.frameworks.llamacpp.driver import LlamaCpp

    device, services = phone
    app = tmp_path / "MeltBench.sh"  # the app contract, with this machine's llama-bench inside
    app.write_text((DATA / "MeltBench.sh").read_text().replace(
        '"$MELT_TEST_LLAMA_BENCH"', shlex.quote(str(llamacpp_build.binaries["llama-bench"]))))
    device.transport.install(make_app(tmp_path, app))
    model = device.stage(tiny_model, category="models")
    driver = LlamaCpp()
    params = {"n_prompt": 16, "n_gen": 8, "repetitions": 2, "threads": 1}
    argv = list(driver.invocation("bench", params, bin_dir="", model_path=model).argv[1:])
    run = device.run_app(argv, out_dir="melt/out/job1", timeout_s=120, sample_every_s=0.1)
    assert run.returncode == 0, run.stderr[-500:]
    metrics = driver.parse_metrics("bench", params, run.stdout, run.stderr, run.returncode)
    assert metrics["prefill_tps"] > 0 and metrics["decode_tps"] > 0
    assert ("launch", ["--melt-out", "melt/out/job1", "--", *argv]) in services.calls


def test_ios_app_build_says_what_is_missing_here(tmp_path):
    import platform

    from melt.errors import BuildError
    from melt.frameworks.llamacpp.ios_app import build_ios_app

    if platform.system() == "Darwin":
        pytest.skip("this machine may really build it")
    with pytest.raises(BuildError, match="macOS with Xcode"):
        build_ios_app(tmp_path, "TEAM")

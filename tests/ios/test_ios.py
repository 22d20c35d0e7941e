"""The iPhone path against the virtual iPhone and a fake of pymobiledevice3 (no iPhone is attached here).

What is real: the app bundle's Info.plist, a launched process that writes its
own files, llama.cpp's llama-bench doing the work, melt's parser reading it.
What is simulated, at two depths: the virtual iPhone
(:class:`melt.virtual.iphone_device.IphoneDevice`, used here in this
process) stands in for melt's service layer where a test is about the app's
life (install, launch, files, timeouts); ``fake_pymobiledevice3.py`` stands in
for the library under melt's own service layer and answers in raw form (a
lockdown GetValue reply, DVT energy samples of every monitored process), so
what melt reports is computed by melt. Each check compares melt's figures
with the raw answer, never with a value the fake hands over already in
melt's form.
"""

from __future__ import annotations

import asyncio
import json
import os
import plistlib
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from melt.config.specs import DeviceSpec
from melt.devices.ios import ENERGY_NOTE, IosDevice, energy_impact_metrics
from melt.errors import CommandTimeout, TransportError
from melt.transports.ios import AppNotInstalled, IosTransport, Pymobiledevice3Services, attached_iphones
from melt.virtual.iphone_config import VirtualIphoneConfig
from melt.virtual.iphone_device import IphoneDevice
from tests.ios.fake_pymobiledevice3 import FakeLibrary, FakePhone

DATA = Path(__file__).parent / "data"
BUNDLE = "org.melt.bench"
LOCKDOWN = DATA / "lockdown-getvalue.plist"  # an iPhone 14 Pro's lockdown GetValue reply


def make_app(tmp_path: Path, bundle_id: str = BUNDLE) -> Path:
    """An app bundle as Xcode lays it out (the virtual iPhone reads its Info.plist and runs its own app)."""
    app = tmp_path / "MeltBench.app"
    app.mkdir()
    (app / "MeltBench").write_bytes(b"\xcf\xfa\xed\xfe")  # a Mach-O header: nothing this machine runs
    (app / "Info.plist").write_bytes(plistlib.dumps(
        {"CFBundleIdentifier": bundle_id, "CFBundleExecutable": "MeltBench", "CFBundleName": "MeltBench"}))
    return app


def virtual_phone(tmp_path: Path, tools: dict[str, Path]) -> tuple[IosDevice, IphoneDevice]:
    services = IphoneDevice(VirtualIphoneConfig(preinstalled=[]), tmp_path / "phone", tools=tools)
    services.start()
    spec = DeviceSpec(name="iphone", kind="ios")
    return IosDevice(spec, IosTransport(services, services.config.udid, BUNDLE)), services


@pytest.fixture
def phone(tmp_path: Path):
    hang = tmp_path / "hang.sh"
    hang.write_text("#!/bin/sh\nexec sleep 60\n")
    hang.chmod(0o755)
    device, services = virtual_phone(tmp_path, {"llama-bench": hang, "llama-completion": hang})
    yield device, services
    services.stop()


def test_no_shell_on_an_iphone(phone):
    device, _ = phone
    with pytest.raises(TransportError, match="runs no shell"):
        device.transport.run(["echo", "hi"])


def test_paths_stay_inside_documents(phone, tmp_path):
    device, services = phone
    device.transport.install(make_app(tmp_path))
    f = tmp_path / "x.txt"
    f.write_text("x")
    for bad in ("../escape", "/etc/passwd", "a/../../b", ""):
        with pytest.raises(TransportError, match="not a path inside"):
            device.transport.push(f, bad)
    assert not (services.root / "containers" / "escape").exists()


def test_properties_come_from_the_phones_lockdown_values(monkeypatch):
    FakeLibrary([FakePhone(LOCKDOWN)]).install(monkeypatch)
    values = plistlib.loads(LOCKDOWN.read_bytes())["Value"]
    services = Pymobiledevice3Services()
    device = IosDevice(DeviceSpec(name="iphone", kind="ios"), IosTransport(services, values["UniqueDeviceID"], BUNDLE))
    props = device.properties()
    # melt's names for Apple's keys
    assert props["model"] == "iPhone15,2" and props["name"] == "Lab iPhone 14 Pro"
    assert props["os"] == "iOS 17.5.1" and props["build"] == "21F90"
    assert props["udid"] == "00008120-001A2B3C4D5E6F70" and props["platform"] == "ios"
    assert "not joules" in props["energy"]


def test_energy_impact_is_the_asked_process_own(monkeypatch, tmp_path):
    """A DVT sample reports every monitored process; melt keeps the one it asked for."""
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    idle = subprocess.Popen(["sleep", "30"])
    try:
        FakeLibrary([FakePhone(LOCKDOWN, others=[idle.pid, busy.pid])]).install(monkeypatch)
        services = Pymobiledevice3Services()
        udid = plistlib.loads(LOCKDOWN.read_bytes())["Value"]["UniqueDeviceID"]
        time.sleep(0.2)
        hot, cold = services.process_sample(udid, busy.pid), services.process_sample(udid, idle.pid)
        assert set(hot) == set(cold) == {"energy_impact"}
        assert hot["energy_impact"] > 30 and cold["energy_impact"] < 5, (hot, cold)
        gone = subprocess.Popen(["true"])
        gone.wait()
        assert services.process_sample(udid, gone.pid) is None  # no entry for it: no score, not 0
        assert services.process_sample(udid, busy.pid + 1_000_000) is None
    finally:
        busy.kill()
        idle.kill()
        busy.wait()
        idle.wait()


def test_energy_impact_without_developer_image_is_missing_not_zero(monkeypatch):
    FakeLibrary([FakePhone(LOCKDOWN, developer_image=False)]).install(monkeypatch)
    udid = plistlib.loads(LOCKDOWN.read_bytes())["Value"]["UniqueDeviceID"]
    assert Pymobiledevice3Services().process_sample(udid, os.getpid()) is None


def test_stage_sends_a_file_once(phone, tmp_path):
    device, services = phone
    device.transport.install(make_app(tmp_path))
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF" + bytes(1000))
    remote = device.stage(model, category="models")
    assert remote.startswith("melt/models/") and remote.endswith("-m.gguf")
    pushed = device.transport.bytes_pushed
    assert device.stage(model, category="models") == remote
    assert device.transport.bytes_pushed == pushed  # second time: nothing sent
    model.write_bytes(b"GGUF" + bytes(999) + b"x")  # same name, new bytes: sent again
    device.stage(model, category="models")
    assert device.transport.bytes_pushed > pushed


def test_launch_needs_an_installed_app(phone):
    device, _ = phone
    with pytest.raises(AppNotInstalled, match="not installed"):
        device.run_app(["-h"], out_dir="melt/out/1", timeout_s=5)


def test_a_hung_app_times_out_and_is_stopped(phone, tmp_path):
    device, services = phone  # its llama-bench hangs
    device.transport.install(make_app(tmp_path))
    with pytest.raises(CommandTimeout):
        device.run_app([], out_dir="melt/out/1", timeout_s=1.0, sample_every_s=0.2)
    assert len(services.procs) == 1  # it was launched, and then stopped
    assert all(p.poll() is not None for p in services.procs.values())


def test_a_detached_phone_is_unavailable(phone):
    device, services = phone
    device.transport.udid = "00008030-000B2C3D4E5F6071"  # another phone, not attached
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
    data = json.loads(result.output)
    assert data["iphones"] == [] and "pymobiledevice3" in data["iphones_note"]


def test_melt_devices_lists_attached_iphones_from_lockdown(monkeypatch, tmp_path):
    locked = tmp_path / "locked.plist"
    reply = plistlib.loads(LOCKDOWN.read_bytes())
    reply["Value"]["UniqueDeviceID"] = "00008030-000B2C3D4E5F6071"
    locked.write_bytes(plistlib.dumps(reply))
    FakeLibrary([FakePhone(LOCKDOWN), FakePhone(locked, locked=True)]).install(monkeypatch)
    from melt.cli.main import cli

    result = CliRunner().invoke(cli, ["devices", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["iphones_note"] is None
    first, second = data["iphones"]
    assert first == {"udid": "00008120-001A2B3C4D5E6F70", "name": "Lab iPhone 14 Pro", "product_type": "iPhone15,2",
                     "ios_version": "17.5.1", "build": "21F90"}
    # a locked phone still shows, with why melt cannot read it
    assert second["udid"] == "00008030-000B2C3D4E5F6071" and "not paired or locked" in second["status"]
    assert "name" not in second


def test_iphones_listed_from_inside_an_event_loop(monkeypatch):
    """A notebook cell runs inside an event loop: melt's own loop must not clash with it."""
    FakeLibrary([FakePhone(LOCKDOWN)]).install(monkeypatch)

    async def cell():
        return attached_iphones()

    found, note = asyncio.run(cell())
    assert note is None and [d["product_type"] for d in found] == ["iPhone15,2"]


@pytest.mark.slow
def test_benchmark_app_runs_llama_bench_and_melt_reads_it(tmp_path, llamacpp_build, tiny_model):
    """The whole iPhone flow: install, stage the model, launch with llama-bench's
    arguments, wait for the app's files, pull them, parse them."""
    from melt.frameworks.llamacpp.driver import LlamaCpp

    bench = tmp_path / "llama-bench"  # this machine's llama-bench, after 0.3 s (an app's start on a
    bench.write_text(f"#!/bin/sh\nsleep 0.3\nexec {shlex.quote(str(llamacpp_build.binaries['llama-bench']))} \"$@\"\n")
    bench.chmod(0o755)  # phone), so that even a loaded test machine samples it while it runs
    device, services = virtual_phone(tmp_path, {"llama-bench": bench, "llama-completion": bench})
    device.transport.install(make_app(tmp_path))
    model = device.stage(tiny_model, category="models")
    driver = LlamaCpp()
    params = {"n_prompt": 16, "n_gen": 8, "repetitions": 2, "threads": 1}
    argv = list(driver.invocation("bench", params, bin_dir="", model_path=model).argv[1:])
    run = device.run_app(argv, out_dir="melt/out/job1", timeout_s=120, sample_every_s=0.02)  # a run of ~0.1 s
    assert run.returncode == 0, run.stderr[-500:]
    metrics = driver.parse_metrics("bench", params, run.stdout, run.stderr, run.returncode)
    # what llama-bench printed inside the app: one test object per line, each with
    # the arguments melt passed through the launch and its raw timings in ns
    printed = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    pp = next(r for r in printed if r["n_prompt"] == 16 and r["n_gen"] == 0)
    tg = next(r for r in printed if r["n_prompt"] == 0 and r["n_gen"] == 8)
    assert pp["n_threads"] == tg["n_threads"] == 1 and len(pp["samples_ns"]) == len(tg["samples_ns"]) == 2
    for row, phase, tokens in ((pp, "prefill", 16), (tg, "decode", 8)):
        rates = [tokens / (ns * 1e-9) for ns in row["samples_ns"]]  # tokens/s of each repetition
        assert metrics[f"{phase}_tps"] == pytest.approx(statistics.mean(rates), rel=1e-3)
        assert metrics[f"{phase}_tps_stddev"] == pytest.approx(statistics.stdev(rates), rel=1e-2, abs=1e-6)
    # the phone was sampled while the app ran, and its score is stored as a score
    times = [s["t_s"] for s in run.samples]
    assert times and times == sorted(times) and times[-1] <= run.duration_s
    energy = energy_impact_metrics(run.samples)
    assert energy["energy_impact_note"] == ENERGY_NOTE and not any(k.endswith("_j") for k in energy)
    services.stop()


def test_ios_app_build_says_what_is_missing_here(tmp_path):
    import platform

    from melt.errors import BuildError
    from melt.frameworks.llamacpp.ios_app import build_ios_app

    if platform.system() == "Darwin":
        pytest.skip("this machine may really build it")
    with pytest.raises(BuildError, match="macOS with Xcode"):
        build_ios_app(tmp_path, "TEAM")


def test_pymobiledevice3_launch_needs_the_tunnel_from_ios_17(monkeypatch):
    from melt.transports.ios import TUNNEL_HINT, TunnelMissing

    udid = plistlib.loads(LOCKDOWN.read_bytes())["Value"]["UniqueDeviceID"]  # an iOS 17.5.1 phone
    FakeLibrary([FakePhone(LOCKDOWN, tunnel=False)]).install(monkeypatch)
    with pytest.raises(TunnelMissing, match="^tunnel missing: iOS 17.5.1") as err:
        Pymobiledevice3Services().launch(udid, BUNDLE, ["--melt-out", "melt/out/1"], {})
    assert TUNNEL_HINT in str(err.value)
    FakeLibrary([FakePhone(LOCKDOWN, tunnel=True)]).install(monkeypatch)
    assert Pymobiledevice3Services().launch(udid, BUNDLE, [], {}) == 4242  # through the tunnel


def test_pymobiledevice3_on_a_locked_phone_is_device_locked(monkeypatch):
    from melt.transports.ios import DeviceLocked

    udid = plistlib.loads(LOCKDOWN.read_bytes())["Value"]["UniqueDeviceID"]
    FakeLibrary([FakePhone(LOCKDOWN, screen_locked=True)]).install(monkeypatch)
    with pytest.raises(DeviceLocked, match="^device locked: the iPhone is locked"):
        Pymobiledevice3Services().launch(udid, BUNDLE, [], {})

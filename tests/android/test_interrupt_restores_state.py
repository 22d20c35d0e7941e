"""Ctrl-C in the middle of a run puts the phone back as it was (checked through adb shell)."""

from __future__ import annotations

import json
import signal
import time

import pytest

from tests.helpers import melt, melt_child, wait_for_journal

pytestmark = [pytest.mark.adb, pytest.mark.slow]


def phone_state(adb_server, serial: str) -> dict[str, str]:
    def sh(cmd: str) -> str:
        return adb_server.run("-s", serial, "shell", cmd, timeout=30).stdout.strip()

    power = sh("dumpsys power")
    return {
        "brightness": sh("settings get system screen_brightness"),
        "stay_on": sh("settings get global stay_on_while_plugged_in"),
        "battery": sh("dumpsys battery | grep -i -E 'ac powered|usb powered'"),
        "screen": "on" if "Display Power: state=ON" in power or "mWakefulness=Awake" in power else "off",
    }


def test_sigint_mid_job_restores_brightness_charging_screen(tmp_path, adb_server, adb_serial, virtual_phone):
    from melt.frameworks.llamacpp.build import host_build
    from melt.models.tiny import write_tiny_model

    host_build()
    virtual_phone.plug_charger(True)  # on a charger, as phones on a desk are
    time.sleep(0.5)
    before = phone_state(adb_server, adb_serial)
    model = write_tiny_model(tmp_path / "tiny.gguf")
    (tmp_path / "phone.yaml").write_text(
        "name: phone\nkind: android\n"
        f"adb: {{connect: '{virtual_phone.address}', server_port: {adb_server.port}}}\n"
        "virtual: {}\ntelemetry: {idle_s: 0.2}\n"
        "state: {screen: 'off', brightness: 7, charging: disabled, stay_awake: true}\n")
    (tmp_path / "e.yaml").write_text(
        f"name: ctrl-c\ndevices: [{tmp_path / 'phone.yaml'}]\nmodels: [{{name: t, path: {model}}}]\n"
        "workloads: [{name: g, kind: generate, prompt: hi, n_predict: 8, threads: 1}]\n"
        "repetitions: 8\nwarmup: 0\n")
    results = tmp_path / "r"
    proc = melt_child("run", str(tmp_path / "e.yaml"), "--results", str(results))
    wait_for_journal(results, 1, proc=proc)
    during = phone_state(adb_server, adb_serial)
    assert during["brightness"] == "7" and during["screen"] == "off"  # the state was applied
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert phone_state(adb_server, adb_serial) == before
    manifest = json.loads(next(results.glob("*/manifest.json")).read_text())
    assert manifest["status"] == "interrupted"
    # and the run can still be finished
    out = melt("run", "--resume", manifest["run_id"], "--results", str(results))
    assert out.returncode == 0, out.stderr
    assert phone_state(adb_server, adb_serial) == before

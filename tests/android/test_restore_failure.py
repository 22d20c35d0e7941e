"""A device setting melt could not put back is said, stored with the run, and fixable by hand."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.helpers import melt, melt_child, show, wait_for_journal

pytestmark = [pytest.mark.adb, pytest.mark.slow]

SETTINGS = "/data/melt-virtual/settings"  # where the virtual phone's `settings` keeps its values


def test_a_failed_restore_is_stored_shown_and_fixable_by_hand(tmp_path, request, adb_server, adb_serial,
                                                              virtual_phone):
    from melt.frameworks.llamacpp.build import host_build
    from melt.models.tiny import write_tiny_model
    from melt.store.paths import cache_dir

    def sh(cmd: str) -> str:
        return adb_server.run("-s", adb_serial, "shell", cmd, timeout=30).stdout.strip()

    host_build()
    name = f"restore-{tmp_path.name[-12:]}"  # its own state journal (melt's cache keeps one per device name)
    journal = cache_dir() / "state" / f"{name}.json"
    request.addfinalizer(lambda: journal.unlink(missing_ok=True))
    sh("settings put system screen_brightness 150")
    model = write_tiny_model(tmp_path / "tiny.gguf")
    (tmp_path / "phone.yaml").write_text(
        f"name: {name}\nkind: android\n"
        f"adb: {{connect: '{virtual_phone.address}', server_port: {adb_server.port}}}\n"
        "virtual: {}\ntelemetry: {enabled: false}\nstate: {brightness: 7}\n")
    (tmp_path / "e.yaml").write_text(
        f"name: restore\ndevices: [{tmp_path / 'phone.yaml'}]\nmodels: [{{name: t, path: {model}}}]\n"
        "workloads: [{name: g, kind: generate, prompt: hi, n_predict: 256, threads: 1}]\n"
        "repetitions: 8\nwarmup: 0\n")  # long enough to break the store before the end
    results = tmp_path / "r"
    proc = melt_child("run", str(tmp_path / "e.yaml"), "--results", str(results))
    wait_for_journal(results, 1, proc=proc)
    assert sh("settings get system screen_brightness") == "7"
    # the settings store breaks under melt's feet: `settings put system ...` now fails
    sh(f"rm -rf {SETTINGS}/system && echo broken > {SETTINGS}/system")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err  # every job ran; the device state is a separate matter
    assert "brightness was not restored" in err and "Traceback" not in err

    run_id = out.strip().splitlines()[-1]
    stored = show(run_id, results)["restore_failures"]
    assert [f["knob"] for f in stored] == ["brightness"], stored
    assert json.loads(journal.read_text())[0]["by_hand"] == stored[0]["by_hand"]  # still pending for next time
    assert stored[0]["device"] == name and "restore failed" in stored[0]["error"]
    by_hand = stored[0]["by_hand"]
    assert by_hand.startswith(f"adb -s {adb_serial} shell ")
    shown = melt("results", "show", run_id, "--results", str(results))
    assert "brightness was not restored" in shown.stdout and by_hand in shown.stdout

    # the command really restores it once the store works again
    sh(f"rm -f {SETTINGS}/system")
    fixed = subprocess.run(by_hand, shell=True, capture_output=True, text=True, timeout=60,
                           env={**os.environ, "ANDROID_ADB_SERVER_PORT": str(adb_server.port)})
    assert fixed.returncode == 0, fixed.stderr
    assert sh("settings get system screen_brightness") == "150"
    assert json.loads((results / run_id / "manifest.json").read_text())["restore_failures"] == stored

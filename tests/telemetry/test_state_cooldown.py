"""Device state knobs restore on every exit; cool-down waits by temperature (fake devices)."""

from __future__ import annotations

import re

import pytest

from melt.config.specs import CooldownSpec, DeviceSpec, StateSpec
from melt.devices.base import Device
from melt.devices.state import DeviceState
from melt.telemetry.cooldown import BatteryTooLow, check_battery, wait_for_cooldown
from melt.transports.base import CommandResult


class FakePhone:
    """A scripted transport keeping settings in a dict; every script recorded."""

    name = "fake"

    def __init__(self):
        self.settings = {"system screen_brightness": "128", "system screen_brightness_mode": "1",
                         "global stay_on_while_plugged_in": "0"}
        self.screen = "on"
        self.unplugged = False
        self.calls: list[str] = []
        self.temps = [60.0]
        self.level = "80"

    def shell(self, script, *, timeout=60, check=True):
        self.calls.append(script)
        out, rc = "", 0
        if script.startswith("command -v"):
            out = ""
        elif script.startswith("settings get "):
            out = self.settings.get(script[len("settings get "):], "null")
        elif script.startswith("dumpsys power"):
            out = "Display Power: state=" + ("ON" if self.screen == "on" else "OFF")
        elif "dumpsys battery 2>/dev/null" == script:
            out = "  (UPDATES STOPPED -- use 'reset' to restart)\n" if self.unplugged else "level: 80\n"
        elif script.startswith("cmd connectivity"):
            rc = 1
        elif "scaling_governor" in script:
            out = "no"
        elif "thermal_zone" in script:
            t = self.temps.pop(0) if len(self.temps) > 1 else self.temps[0]
            out = f"/sys/class/thermal/thermal_zone0/type:skin\n/sys/class/thermal/thermal_zone0/temp:{int(t * 1000)}\n"
        elif "/capacity" in script:
            out = self.level
        else:
            for part in re.split(r"\s*(?:&&|;)\s*", script):
                words = part.split()
                if words[:2] == ["settings", "put"]:
                    self.settings[f"{words[2]} {words[3]}"] = words[4]
                elif words[:2] == ["settings", "delete"]:
                    self.settings.pop(f"{words[2]} {words[3]}", None)
                elif words[:2] == ["input", "keyevent"]:
                    self.screen = "off" if words[2] == "KEYCODE_SLEEP" else "on"
                elif words[:3] == ["svc", "power", "stayon"]:
                    self.settings["global stay_on_while_plugged_in"] = "7" if words[3] == "true" else "0"
                elif words[:3] == ["dumpsys", "battery", "unplug"]:
                    self.unplugged = True
                elif words[:3] == ["dumpsys", "battery", "reset"]:
                    self.unplugged = False
        return CommandResult(("sh", "-c", script), rc, out + ("\n" if out else ""), "")


SPEC = StateSpec(screen="off", brightness=10, charging="disabled", stay_awake=True, airplane=True)


def snapshot(t: FakePhone):
    return (dict(t.settings), t.screen, t.unplugged)


def test_knobs_apply_and_restore():
    t = FakePhone()
    before = snapshot(t)
    with DeviceState(t, SPEC) as state:
        assert t.screen == "off" and t.unplugged
        assert t.settings["system screen_brightness"] == "10"
        assert t.settings["global stay_on_while_plugged_in"] == "7"
    assert snapshot(t) == before
    reports = {r["knob"]: r for r in state.as_dict()}
    assert reports["airplane"]["error"] == "not available on this device"
    assert all(r["restored"] for k, r in reports.items() if k != "airplane")


@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError])
def test_restore_on_ctrl_c_and_errors(exc, tmp_path):
    t = FakePhone()
    before = snapshot(t)
    journal = tmp_path / "state.json"
    with pytest.raises(exc):
        with DeviceState(t, SPEC, journal=journal):
            assert journal.exists()
            raise exc()
    assert snapshot(t) == before
    assert not journal.exists()


def test_a_failed_restore_says_how_to_restore_by_hand_and_a_later_success_clears_it(tmp_path):
    from melt.devices.state import restore_journal

    class Refusing(FakePhone):
        refuse = True

        def shell(self, script, *, timeout=60, check=True):
            if self.refuse and script.startswith("settings put system screen_brightness 128"):
                return CommandResult(("sh", "-c", script), 1, "", "settings: storage is read-only\n")
            return super().shell(script, timeout=timeout, check=check)

    t = Refusing()
    journal = tmp_path / "state.json"
    with DeviceState(t, StateSpec(brightness=10, stay_awake=True), journal=journal) as state:
        pass
    failed = state.failed_restores()
    assert [r.knob for r in failed] == ["brightness"] and "read-only" in failed[0].error
    assert failed[0].by_hand == "sh -c 'settings put system screen_brightness 128 && " \
                                "settings put system screen_brightness_mode 1'"
    assert t.settings["global stay_on_while_plugged_in"] == "0"  # the others were still restored
    assert t.settings["system screen_brightness"] == "10"
    # the journal keeps it pending; once the device accepts it, the old error is gone
    t.refuse = False
    reports = restore_journal(t, journal)
    assert [(r.knob, r.restored, r.error, r.by_hand) for r in reports] == [("brightness", True, None, None)]
    assert t.settings["system screen_brightness"] == "128" and not journal.exists()


def test_strict_refuses_a_missing_knob_and_restores_what_was_set():
    t = FakePhone()
    before = snapshot(t)
    from melt.devices.state import StateError

    with pytest.raises(StateError):
        with DeviceState(t, SPEC, strict=True):
            pass
    assert snapshot(t) == before


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, s):
        self.now += s


class FakeDevice(Device):
    """A device over the scripted transport; only what cool-down reads is real."""

    def workdir(self) -> str:
        return "/data/local/tmp/melt"

    def properties(self) -> dict:
        return {"kind": "fake"}

    def stage(self, local, *, category: str) -> str:
        raise AssertionError("cool-down stages nothing")


def fake_device(t: FakePhone, **kw) -> Device:
    return FakeDevice(DeviceSpec(name="fake", kind="android", **kw), t)  # type: ignore[arg-type]


def test_cooldown_waits_until_below_the_threshold():
    t = FakePhone()
    t.temps = [60.0, 52.0, 46.0, 39.5, 39.0]
    clock = Clock()
    spec = CooldownSpec(max_temp_c=40, timeout_s=100, poll_s=5, zone="skin")
    r = wait_for_cooldown(fake_device(t), spec, clock=clock, sleep=clock.sleep)
    assert r.ok and r.polls == 4 and r.waited_s == 15.0
    assert r.start_temp_c == 60.0 and r.end_temp_c == 39.5 and r.source == "skin"


def test_cooldown_times_out_with_a_reason():
    t = FakePhone()
    t.temps = [60.0]
    clock = Clock()
    r = wait_for_cooldown(fake_device(t), CooldownSpec(max_temp_c=40, timeout_s=20, poll_s=5),
                          clock=clock, sleep=clock.sleep)
    assert not r.ok and "after 20 s" in r.reason and r.waited_s == 20.0


def test_battery_floor_stops_or_pauses():
    t = FakePhone()
    t.level = "12"
    device = fake_device(t, min_battery_pct=20)
    with pytest.raises(BatteryTooLow):
        check_battery(device)
    clock = Clock()

    def charge(s):
        clock.sleep(s)
        t.level = str(int(t.level) + 5)

    paused = fake_device(t, min_battery_pct=20, cooldown=CooldownSpec(on_low_battery="pause"))
    r = check_battery(paused, clock=clock, sleep=charge)
    assert r.ok and r.level_pct >= 25 and r.waited_s > 0

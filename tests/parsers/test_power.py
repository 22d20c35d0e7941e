"""dumpsys power: screen state and wakefulness (inline examples in the Android layout)."""

from __future__ import annotations

from melt.parsers import parse
from melt.parsers.power import parse_dumpsys_power

ANDROID_12 = """POWER MANAGER (dumpsys power)

Power Manager State:
  Settings power_manager_constants:
  mDirty=0x0
  mWakefulness=Asleep
  mWakefulnessChanging=false
  mIsPowered=false
  mStayOn=false
  mStayOnWhilePluggedInSetting=0
Display Power: state=OFF
"""

OLD = """  mWakefulness=Awake
  mStayOn=true
"""


def test_screen_off_from_display_state():
    rec = parse_dumpsys_power(ANDROID_12)
    assert rec == {"display_state": "OFF", "wakefulness": "Asleep", "screen_on": False, "stay_on": False,
                   "stay_on_while_plugged": 0}


def test_wakefulness_alone_decides_when_no_display_line():
    assert parse_dumpsys_power(OLD) == {"wakefulness": "Awake", "screen_on": True, "stay_on": True}


def test_nothing_known_gives_nothing():
    assert parse_dumpsys_power("garbage\n") == {}


def test_detected_by_melt_parse():
    kind, records = parse(ANDROID_12)
    assert kind == "dumpsys-power" and records[0]["screen_on"] is False

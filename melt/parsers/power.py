"""``dumpsys power``: whether the screen is on, and the wake state.

Reads the lines that every Android version since 5 prints
(``Display Power: state=ON``, ``mWakefulness=Awake``, ``mStayOn=true``);
newer versions print wakefulness per display group, which is read too.
A field not in the text is left out.
"""

from __future__ import annotations

import re
from typing import Any

_DISPLAY = re.compile(r"^\s*Display Power:\s*state=(\w+)", re.M)
_WAKE = re.compile(r"^\s*(?:mWakefulness|getWakefulness\(\))\s*=\s*(\w+)", re.M)
_STAY_ON = re.compile(r"^\s*mStayOn\s*=\s*(true|false)", re.M)
_STAY_ON_SETTING = re.compile(r"^\s*mStayOnWhilePluggedInSetting\s*=\s*(\d+)", re.M)


def parse_dumpsys_power(text: str) -> dict[str, Any]:
    """``{"display_state", "wakefulness", "screen_on", "stay_on", "stay_on_while_plugged"}``.

    ``screen_on`` comes from the display state when printed, else from the
    wakefulness (``Awake`` is on); it is absent when neither is printed.
    """
    out: dict[str, Any] = {}
    if m := _DISPLAY.search(text):
        out["display_state"] = m.group(1).upper()
    if m := _WAKE.search(text):
        out["wakefulness"] = m.group(1)
    if "display_state" in out:
        out["screen_on"] = out["display_state"] not in ("OFF", "DOZE", "DOZE_SUSPEND")
    elif "wakefulness" in out:
        out["screen_on"] = out["wakefulness"].lower() == "awake"
    if m := _STAY_ON.search(text):
        out["stay_on"] = m.group(1) == "true"
    if m := _STAY_ON_SETTING.search(text):
        out["stay_on_while_plugged"] = int(m.group(1))
    return out

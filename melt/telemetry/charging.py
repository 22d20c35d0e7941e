"""Was the battery charging while a job was measured? Pure, no device needed.

A phone on a USB cable keeps charging unless its charger is really cut
(a vendor sysfs switch such as ``input_suspend``); ``dumpsys battery unplug``
only changes what Android reports. While it charges, the fuel gauge measures
the charger's current minus the phone's, not the phone's consumption, so
the job's fuel-gauge energy is not consumption and is not reported as such.

Evidence, from the runner's files: the battery ``status`` and the chargers'
``online`` files read at each of the runner's marks (``markfiles``), the
``usb_online``/``ac_online`` and ``charge_counter_uah`` channels sampled
during the job, and the sign of the gauge's current.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


def parse_markfiles(text: str) -> list[tuple[float, str, str, str]]:
    """``TIME MARK FILE VALUE`` lines -> [(time, mark, file, value)] (value may hold spaces)."""
    out = []
    for line in text.splitlines():
        parts = line.split(None, 3)
        if len(parts) >= 3:
            try:
                t = float(parts[0].replace(",", "."))
            except ValueError:
                continue
            out.append((t, parts[1], parts[2], parts[3].strip() if len(parts) == 4 else ""))
    return out


def charging_state(frame: pd.DataFrame, markfiles: str, window: tuple[float, float]) -> dict[str, Any]:
    """What the job saw of the battery and chargers, and the verdict.

    Returns ``{"charging": bool, "evidence": [...], "status": {mark: word},
    "usb_online": 0|1, "ac_online": 0|1, "charge_counter_uah": [first, last]}``
    (fields the device lacks are absent). When the job read none of these
    (a board without a battery or a charger), ``charging`` is None and
    ``note`` says why: not knowing is not "not charging".
    """
    start, end = window
    out: dict[str, Any] = {}
    evidence: list[str] = []
    status: dict[str, str] = {}
    for _, mark, path, value in parse_markfiles(markfiles):
        name = path.rsplit("/", 2)
        if path.endswith("/status"):
            status[mark] = value
            if value.lower().startswith("charging") and "charging" not in " ".join(evidence):
                evidence.append(f"battery status Charging at mark {mark}")
        elif path.endswith("/online") and len(name) >= 2:
            key = "ac_online" if "ac" in name[-2].lower() or "mains" in name[-2].lower() else "usb_online"
            if value.strip() == "1":
                out[key] = 1
            else:
                out.setdefault(key, 0)
    if status:
        out["status"] = status
    inside = frame[(frame["t_s"] >= start) & (frame["t_s"] <= end)] if "t_s" in frame.columns else frame
    for col in ("usb_online", "ac_online"):
        if col in inside.columns and inside[col].notna().any():
            on = int((inside[col] > 0).any())
            out[col] = max(out.get(col, 0), on)
    if "charge_counter_uah" in inside.columns and inside["charge_counter_uah"].notna().sum() >= 2:
        c = inside["charge_counter_uah"].dropna().to_numpy(dtype=float)
        out["charge_counter_uah"] = [float(c[0]), float(c[-1])]
        if c[-1] > c[0]:
            evidence.append(f"charge counter rose by {c[-1] - c[0]:.0f} uAh")
    if "current_ua" in inside.columns and inside["current_ua"].notna().any():
        median = float(np.nanmedian(inside["current_ua"]))
        if median < 0:
            evidence.append(f"current flowed into the battery (median {median / 1000:.0f} mA)")
    seen = bool(status) or any(k in out for k in ("usb_online", "ac_online", "charge_counter_uah")) or (
        "current_ua" in inside.columns and bool(inside["current_ua"].notna().any()))
    if not seen:
        return {"charging": None, "evidence": [], "note": NOT_READ}
    online = out.get("usb_online") or out.get("ac_online")
    if online and any(v.lower() == "full" for v in status.values()):
        evidence.append("battery Full on a charger: the charger powered the phone")
    out["charging"] = bool(evidence)
    if online and not evidence:
        out["note"] = "a charger was online but the battery did not charge (cut by its switch, or full)"
    out["evidence"] = evidence
    return out


NOT_READ = "no battery status, charger or fuel gauge was read during the job"

CHARGING_REASON = ("the battery was charging during the job ({}): the fuel gauge measured the charger "
                   "against the load, not the consumption; cut the charger (state.charging: disabled "
                   "on a phone with a sysfs switch) or unplug it")

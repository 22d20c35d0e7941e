"""When an idle baseline measured in an earlier job is used again (pure rules)."""

from __future__ import annotations

import pytest

from melt.telemetry.baseline import BaselineStore, Conditions, IdleBaseline, conditions_from_health, reuse_verdict

RULE = {"max_age_s": 600.0, "max_temp_change_c": 1.0, "max_battery_change_pct": 1.0}
THEN = Conditions(temp_c=30.0, temp_zone="skin", battery_pct=80.0, charging=False)


def baseline(conditions: Conditions = THEN, at: float = 1000.0) -> IdleBaseline:
    return IdleBaseline(0.35, "2026-01-01T00:00:00Z", at, conditions)


def test_no_baseline_yet_measures():
    ok, why = reuse_verdict(None, THEN, 1000.0, **RULE)
    assert not ok and "no idle baseline" in why


def test_same_state_reuses_and_says_when_it_was_measured():
    ok, why = reuse_verdict(baseline(), Conditions(30.6, "skin", 80.0, False), 1100.0, **RULE)
    assert ok and "100 s ago" in why and "30.0 °C" in why
    desc = baseline().describe(1100.0, reused=True, reason=why)
    assert desc["measured_in"] == "an earlier job" and desc["age_s"] == 100.0
    assert desc["measured_at"] == "2026-01-01T00:00:00Z" and desc["conditions"]["temp_c"] == 30.0


@pytest.mark.parametrize("now, at, words", [
    (Conditions(31.5, "skin", 80.0, False), 1100.0, "temperature moved +1.5"),
    (Conditions(28.9, "skin", 80.0, False), 1100.0, "temperature moved -1.1"),
    (Conditions(30.0, "skin", 78.0, False), 1100.0, "battery moved -2%"),
    (Conditions(30.0, "skin", 80.0, True), 1100.0, "charger"),
    (Conditions(30.0, "skin", 80.0, False), 1700.5, "old"),
    (Conditions(None, None, 80.0, False), 1100.0, "no temperature"),
    (Conditions(30.0, "battery", 80.0, False), 1100.0, "comes from battery"),
    (Conditions(30.0, "skin", None, False), 1100.0, "battery level"),
])
def test_a_moved_state_measures_again(now, at, words):
    ok, why = reuse_verdict(baseline(), now, at, **RULE)
    assert not ok and words in why


def test_conditions_from_a_health_snapshot():
    snap = {"temps_c": {"cpu-0-0#0": 41.0, "battery#1": 29.0, "skin#2": 31.5},
            "battery": {"level_pct": 77, "temperature_c": 29.0, "plugged": {"ac": False, "usb": False}}}
    assert conditions_from_health(snap, "skin") == Conditions(31.5, "skin", 77.0, False)
    assert conditions_from_health(snap, None) == Conditions(29.0, "battery", 77.0, False)
    zones_only = {"temps_c": {"cpu#0": 50.0, "gpu#1": 44.0}}
    assert conditions_from_health(zones_only) == Conditions(50.0, "cpu", None, None)
    assert conditions_from_health(None) == Conditions()


def test_the_store_keeps_one_baseline_per_device_and_state(tmp_path):
    store = BaselineStore(tmp_path)
    screen_off = store.key("phone", {"serial": "A"}, {"screen": "off"})
    assert store.get(screen_off) is None
    store.put(screen_off, baseline())
    assert store.get(screen_off) == baseline()  # survives a new process: it is a file
    assert store.get(store.key("phone", {"serial": "A"}, {"screen": "on"})) is None
    assert store.get(store.key("phone", {"serial": "B"}, {"screen": "off"})) is None
    (tmp_path / f"{screen_off}.json").write_text("{broken")
    assert store.get(screen_off) is None


def test_a_baseline_from_the_future_is_not_trusted():
    ok, why = reuse_verdict(baseline(at=2000.0), THEN, 1000.0, **RULE)
    assert not ok and "future" in why

"""The device-state journal is written atomically, and a damaged one does not stop later runs."""

from __future__ import annotations

import json
from pathlib import Path

from melt.devices.state import DeviceState, KnobReport, restore_journal


class _NoDevice:
    """restore_journal must not touch the device for an unreadable journal."""

    def __getattr__(self, name):
        raise AssertionError(f"the device was used ({name})")


def test_damaged_journal_is_moved_aside_and_reported(tmp_path: Path) -> None:
    journal = tmp_path / "state" / "phone.json"
    journal.parent.mkdir()
    journal.write_text('[{"knob": "brightness", "target": 7, "bef')  # cut mid-write
    reports = restore_journal(_NoDevice(), journal)
    assert len(reports) == 1 and reports[0].knob == "journal"
    assert "could not be read" in reports[0].error and "by hand" in reports[0].error
    assert not journal.exists() and (journal.parent / "phone.json.corrupt").exists()
    assert restore_journal(_NoDevice(), journal) == []  # the next run goes on


def test_journal_is_replaced_whole(tmp_path: Path) -> None:
    from melt.config.specs import StateSpec

    journal = tmp_path / "phone.json"
    state = DeviceState(_NoDevice(), StateSpec(), journal=journal)
    state.reports = [KnobReport("brightness", 7, before="128", applied=True)]
    state._save_journal()
    assert json.loads(journal.read_text())[0]["before"] == "128"
    assert [p.name for p in tmp_path.iterdir()] == ["phone.json"]  # no temp file left

"""`melt compare` and `melt history` end to end: a real results folder, the real executable."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner

from melt.cli.main import cli
from tests.helpers import error_line

from .conftest import nightly

MELT = str(Path(sys.executable).parent / "melt")


def melt(*args: str, results: Path) -> subprocess.CompletedProcess:
    return subprocess.run([MELT, *args, "--results", str(results)], capture_output=True, text=True,
                          timeout=120)


@pytest.fixture
def planted(store, cells):
    """History of 6 nightly runs; the current run has decode 10 % slower on one cell, noise elsewhere."""
    slow_cell = cells[3]
    history, current = nightly(store, cells, slow={slow_cell.cell_id: 0.9})
    return store, history, current, slow_cell


def test_two_run_compare_reports_the_slow_cell_alone_and_exits_2(planted, tmp_path):
    store, history, current, slow_cell = planted
    junit = tmp_path / "compare.xml"
    proc = melt("compare", history[-1].run_id, current.run_id, "--metric", "decode_tps",
                "--json", "--junit", str(junit), results=store.root)
    assert proc.returncode == 2, proc.stderr
    data = json.loads(proc.stdout)
    regressed = [c for c in data["cells"] if c["regressed"]]
    assert [c["cell_id"] for c in regressed] == [slow_cell.cell_id]
    (m,) = regressed[0]["metrics"]
    assert m["metric"] == "decode_tps" and m["test"] == "mannwhitney"
    assert m["change"] == pytest.approx(-0.10, abs=0.03) and m["p_value"] <= 0.05
    assert "regression" in proc.stderr
    suite = ET.parse(junit).getroot()
    assert suite.get("tests") == str(len(data["cells"])) and suite.get("failures") == "1"
    failing = [tc for tc in suite.iter("testcase") if tc.find("failure") is not None]
    assert len(failing) == 1 and slow_cell.cell_id in failing[0].get("name")


def test_history_compare_reports_the_slow_cell_alone_and_exits_2(planted):
    store, history, current, slow_cell = planted
    proc = melt("compare", "--history", "5", current.run_id, "--json", results=store.root)
    assert proc.returncode == 2, proc.stderr
    data = json.loads(proc.stdout)
    assert data["mode"] == "history" and data["test"] == "welch"
    assert [c["cell_id"] for c in data["cells"] if c["regressed"]] == [slow_cell.cell_id]
    decode = [m for c in data["cells"] if c["regressed"] for m in c["metrics"] if m["metric"] == "decode_tps"]
    assert decode[0]["verdict"] == "regression" and decode[0]["baseline_n"] == 25  # 5 runs x 5 reps


def test_native_and_emulated_jobs_of_one_cell_are_not_compared(store, cells):
    """One cell's current run ran under an emulator (about 10x slower): no verdict, but said."""
    from datetime import datetime, timezone

    from melt.analysis import synthetic as syn

    emu = cells[2]
    history = syn.make_history(store, cells, 6, repetitions=5, noise=0.01, seed=10)
    current = syn.make_run(store, cells, repetitions=5, noise=0.01, seed=999, factors={emu.cell_id: 0.1},
                           created_at=datetime(2026, 2, 1, 2, 0, tzinfo=timezone.utc), name="nightly",
                           emulated=[emu.cell_id])
    for args in (("compare", history[-1].run_id, current.run_id), ("compare", "--history", "5", current.run_id)):
        proc = melt(*args, "--json", results=store.root)
        assert proc.returncode == 0, proc.stdout + proc.stderr  # not a regression of the code
        data = json.loads(proc.stdout)
        (cell,) = [c for c in data["cells"] if c["cell_id"] == emu.cell_id]
        assert cell["status"] == "incomparable" and not cell["metrics"]
        assert cell["note"] == "baseline ran arm64-v8a, current ran arm64-v8a (emulated): not compared"
        assert all(c["status"] == "compared" for c in data["cells"] if c["cell_id"] != emu.cell_id)
        text = melt(*args, results=store.root)
        assert "incomparable (baseline ran arm64-v8a, current ran arm64-v8a (emulated)" in \
            " ".join(text.stdout.split())
    # an older emulated night in the history is left out, the native ones still judge the cell
    syn.make_run(store, cells, repetitions=5, noise=0.01, seed=77, factors={emu.cell_id: 0.1},
                 created_at=datetime(2026, 1, 20, 2, 0, tzinfo=timezone.utc), name="nightly",
                 emulated=[emu.cell_id])
    later = syn.make_run(store, cells, repetitions=5, noise=0.01, seed=1000,
                         created_at=datetime(2026, 2, 2, 2, 0, tzinfo=timezone.utc), name="nightly")
    data = json.loads(melt("compare", "--history", "5", later.run_id, "--json", results=store.root).stdout)
    (cell,) = [c for c in data["cells"] if c["cell_id"] == emu.cell_id]
    assert cell["status"] == "compared" and "left out" in cell["note"]
    assert not cell["regressed"]


def test_no_slowdown_exits_0(store, cells):
    history, current = nightly(store, cells, slow=None)
    for args in (("compare", history[-1].run_id, current.run_id), ("compare", "--history", "5", current.run_id)):
        proc = melt(*args, results=store.root)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "regression" not in proc.stdout.split("metrics:")[-1]


def test_errors_exit_1(store, cells):
    _, current = nightly(store, cells[:1], history=1, reps=3)
    proc = melt("compare", "no-such-run", current.run_id, results=store.root)
    assert error_line(proc).startswith("Error: no run 'no-such-run'")
    runner = CliRunner()
    res = runner.invoke(cli, ["compare", current.run_id, "--results", str(store.root)])
    assert res.exit_code == 2 and "BASELINE_RUN CURRENT_RUN" in res.output  # usage error


def test_history_shows_the_step(planted):
    store, history, current, slow_cell = planted
    proc = melt("history", "--metric", "decode_tps", "--device", slow_cell.device, "--json",
                "--min-size", "1", results=store.root)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    steps = [s for s in data["steps"] if s["cell_id"] == slow_cell.cell_id]
    assert len(steps) == 1 and steps[0]["run_id"] == current.run_id and steps[0]["worse"]
    assert {s["cell_id"] for s in data["steps"]} == {slow_cell.cell_id}
    text = melt("history", "--metric", "decode_tps", "--device", slow_cell.device, "--min-size", "1",
                results=store.root)
    assert text.returncode == 0 and "▼" in text.stdout
    none = melt("history", "--metric", "decode_tps", "--device", "nope", results=store.root)
    assert error_line(none).startswith("Error: no ok job with metric 'decode_tps' matches")


def test_usage_errors_exit_1_not_2(store, cells):
    _, current = nightly(store, cells[:1], history=1, reps=3)
    for args in (("compare", current.run_id), ("compare", current.run_id, current.run_id, current.run_id)):
        proc = melt(*args, results=store.root)
        assert proc.returncode == 1, (args, proc.stderr)  # 2 means a regression, never a typo
        assert error_line(proc).startswith("Error: ") and proc.stderr.startswith("Usage: melt compare")

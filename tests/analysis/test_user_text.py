"""User data reaches the terminal as text; tables stay readable at 80 columns; typos are errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from melt.analysis import synthetic as syn
from tests.helpers import error_line

from .conftest import nightly

MELT = str(Path(sys.executable).parent / "melt")


def melt(*args: str, results: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    return subprocess.run([MELT, *args, "--results", str(results)], capture_output=True, text=True,
                          timeout=120, env=env, stdin=subprocess.DEVNULL)


def test_names_that_look_like_markup_are_printed_as_they_are(store):
    cells = [syn.Cell(model="[red]w[/red]", workload="[/data]", device="[kworker/0:1]")]
    run = syn.make_run(store, cells, repetitions=2, failed={cells[0].cell_id: "no [bold]file[/bold]"})
    proc = melt("results", "show", run.run_id, results=store.root)
    assert proc.returncode == 0, proc.stderr
    assert "[/data]" in proc.stdout and "[kworker/0:1]" in proc.stdout
    assert "no [bold]file[/bold]" in proc.stdout
    listed = melt("results", "list", results=store.root)
    assert listed.returncode == 0 and run.run_id in listed.stdout


def test_compare_at_80_columns_shows_every_number(store, cells):
    slow = cells[3]
    history, current = nightly(store, cells, slow={slow.cell_id: 0.9}, history=1, reps=5)
    proc = melt("compare", history[-1].run_id, current.run_id, "--metric", "decode_tps",
                results=store.root)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    row = next(line for line in lines if "regression" in line)
    # metric, baseline, current, change, p, floor and verdict on one readable row
    assert "decode_tps" in row and "-10." in row and "%" in row, proc.stdout
    assert any(slow.model in line and slow.device in line for line in lines)


def test_unknown_metric_or_floor_is_an_error_with_a_suggestion(store, cells):
    history, current = nightly(store, cells[:1], history=1, reps=3)
    for args in (("--metric", "decode_tsp"), ("--floor", "decode_tsp=3")):
        proc = melt("compare", history[-1].run_id, current.run_id, *args, results=store.root)
        assert proc.returncode == 1, (args, proc.stdout)
        assert "Unknown metric 'decode_tsp'" in proc.stderr and "Did you mean: decode_tps" in proc.stderr
        assert "Traceback" not in proc.stderr
    proc = melt("compare", "--history", "1", current.run_id, "--metric", "decode_tsp", results=store.root)
    assert "Did you mean: decode_tps" in error_line(proc)

"""A damaged index is rebuilt from the run folders; unreadable runs are named, not hidden."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from melt.analysis import synthetic as syn
from melt.store.runs import ResultsStore

MELT = str(Path(sys.executable).parent / "melt")


def melt(*args: str, results: Path) -> subprocess.CompletedProcess:
    return subprocess.run([MELT, *args, "--results", str(results)], capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)


def test_corrupt_index_says_reindex_and_reindex_rebuilds_it(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "r")
    cells = syn.grid()[:2]
    base = syn.make_run(store, cells, repetitions=2, seed=1)
    cur = syn.make_run(store, cells, repetitions=2, seed=2)
    store.index.close()
    for extra in ("-wal", "-shm"):
        Path(f"{store.root / 'melt.db'}{extra}").unlink(missing_ok=True)
    (store.root / "melt.db").write_bytes(b"this is not a database, just bytes\n" * 200)

    hist = melt("compare", "--history", "1", cur.run_id, results=store.root)
    assert hist.returncode == 1 and "Traceback" not in hist.stderr
    assert "melt results reindex" in hist.stderr, hist.stderr

    done = melt("results", "reindex", results=store.root)
    assert done.returncode == 0, done.stderr
    assert f"indexed {2 * len(cells) * 2} jobs from 2 runs" in done.stdout
    fresh = ResultsStore(store.root)
    ids = {r["run_id"] for r in fresh.index.query("SELECT run_id FROM runs")}
    assert ids == {base.run_id, cur.run_id}
    assert melt("compare", "--history", "1", cur.run_id, results=store.root).returncode == 0


def test_results_list_names_the_runs_it_cannot_read(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "r")
    good = syn.make_run(store, syn.grid()[:1], repetitions=1)
    broken = store.root / "20260101-000000-broken"
    broken.mkdir()
    (broken / "manifest.json").write_text("{half a manifest")
    done = melt("results", "list", results=store.root)
    assert done.returncode == 0
    assert good.run_id in done.stdout
    assert "could not read run 20260101-000000-broken" in done.stderr and "not valid JSON" in done.stderr

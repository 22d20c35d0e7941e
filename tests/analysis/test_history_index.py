"""History queries on the index's indexes answer what reading every row and filtering did."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest

from melt.analysis import synthetic as syn
from melt.analysis.history import compare_history, index_jobs, last_runs, metric_history
from melt.labels import job_labels, labels_text
from melt.store.runs import ResultsStore

T0 = datetime(2026, 3, 1, 2, 0, tzinfo=timezone.utc)


def reference_jobs(store: ResultsStore, metrics: list[str]) -> pd.DataFrame:
    """Every ok job with its metrics, read from the run folders (no index at all)."""
    rows = []
    for run in store.runs():
        for job in run.jobs():
            if job["status"] != "ok":
                continue
            rows.append({"run_id": run.run_id, "created_at": run.manifest["created_at"],
                         "job_id": job["job_id"], "cell_id": job["cell_id"], "device": job["device"],
                         **{m: job["metrics"].get(m) for m in metrics}})
    return pd.DataFrame(rows)


@pytest.fixture
def history_store(tmp_path) -> ResultsStore:
    """Nine runs of six cells; one cell fails in run 3, one cell is new from run 5, two runs
    share a creation time, and the runs are written out of creation order."""
    store = ResultsStore(tmp_path / "results")
    cells = syn.grid(devices=("pixel-8", "rpi-5"), n_gens=(16, 64))[:6]
    extra = syn.renamed(cells[0], params={"n_prompt": 64, "n_gen": 999, "threads": 4})
    days = [0, 1, 2, 3, 4, 5, 5, 7, 6]  # two runs on day 5; day 7 is written before day 6
    for i, day in enumerate(days):
        use = cells + ([extra] if i >= 5 else [])
        syn.make_run(store, use, repetitions=3, noise=0.05, seed=i,
                     failed={cells[2].cell_id: "boom"} if i == 3 else None,
                     created_at=T0 + timedelta(days=day), name="nightly")
    return store


def _key(frame: pd.DataFrame, cols: list[str]) -> list[tuple]:
    return sorted(map(tuple, frame[cols].astype(str).to_numpy().tolist()))


@pytest.mark.parametrize("last_n", [1, 3, 10])
def test_last_runs_in_sql_match_the_filter_in_python(history_store, last_n):
    metrics = ["decode_tps", "prefill_tps"]
    every = reference_jobs(history_store, metrics)
    for current in history_store.runs():
        created = current.manifest["created_at"]
        want = every[(every["run_id"] != current.run_id) & (every["created_at"] < created)]
        want = last_runs(want, last_n)
        cells = sorted({j["cell_id"] for j in current.jobs()})
        got = index_jobs(history_store, cell_ids=cells, metrics=metrics,
                         before=(created, current.run_id), last_n=last_n)
        want = want[want["cell_id"].isin(cells)]
        cols = ["run_id", "job_id", "cell_id", "decode_tps", "prefill_tps"]
        assert len(got) == len(want)
        if len(want):
            assert _key(got, cols) == _key(want, cols)
    assert len(got) > 0  # the last run has a history


def test_metric_history_by_device_matches_the_folders(history_store):
    every = reference_jobs(history_store, ["decode_tps"])
    hist = metric_history(history_store, "decode_tps", device="rpi-5")
    want = every[every["device"] == "rpi-5"].groupby(["cell_id", "run_id"])["decode_tps"].median()
    got = hist.set_index(["cell_id", "run_id"])["median"]
    assert len(got) == len(want) > 0
    assert got.sort_index().to_dict() == pytest.approx(want.sort_index().to_dict())


def test_compare_history_uses_only_earlier_runs(history_store):
    runs = history_store.runs()  # oldest first: the day-7 run is last though it was written before day 6
    assert runs[-1].manifest["created_at"].startswith("2026-03-08")
    result = compare_history(history_store, runs[-1].run_id, 2)
    assert "last 2 runs per cell (2 runs in all)" in result.as_dict()["baseline"]
    # the cell that failed in run 3 reaches back to run 2, the others stop at run 3
    assert "(2 runs in all)" in compare_history(history_store, runs[4].run_id, 1).as_dict()["baseline"]
    first = compare_history(history_store, runs[0].run_id, 2)
    assert "(0 runs in all)" in first.as_dict()["baseline"]


def _plan(store: ResultsStore, sql: str, args: tuple) -> str:
    return " ".join(r[3] for r in store.index.query("EXPLAIN QUERY PLAN " + sql, args))


def test_history_queries_use_their_indexes(history_store):
    plan = _plan(history_store, "SELECT j.job_id FROM jobs j JOIN runs r ON r.run_id = j.run_id "
                                "WHERE j.device = ? AND j.status = 'ok'", ("rpi-5",))
    assert "jobs_device_status" in plan
    plan = _plan(history_store, "SELECT j.job_id FROM jobs j JOIN runs r ON r.run_id = j.run_id "
                                "WHERE j.status = 'ok' AND j.cell_id IN (?, ?)", ("a", "b"))
    assert "jobs_cell_status" in plan
    plan = _plan(history_store, "SELECT m.value FROM jobs j JOIN metrics m ON m.run_id = j.run_id "
                                "AND m.job_id = j.job_id WHERE j.device = ? AND m.name = ?",
                 ("rpi-5", "decode_tps"))
    assert "sqlite_autoindex_metrics_1" in plan  # the metrics' primary key, not a scan of a name


def file_listing(store: ResultsStore) -> list[dict]:
    """What `melt results list` showed when it read every run's files."""
    out = []
    for run in store.runs():
        journal = run.journal()
        found = {name for job in run.jobs() for name in job_labels(job)}
        out.append({"run_id": run.run_id, "experiment": run.manifest["experiment"]["name"],
                    "created_at": run.manifest["created_at"], "status": run.manifest["status"],
                    "jobs_ok": sum(1 for e in journal.values() if e["status"] == "ok"),
                    "jobs_total": run.manifest.get("total_jobs"),
                    "labels": [w for w in labels_text(found, ",").split(",") if w],
                    "path": str(run.dir)})
    return out


def test_run_summaries_from_the_index_match_the_files(history_store):
    want = file_listing(history_store)
    assert [r["run_id"] for r in want] == history_store.run_ids()
    assert ResultsStore(history_store.root).run_summaries() == want
    assert want[3]["jobs_ok"] == 15 and want[3]["status"] == "complete-with-failures"
    assert want[0]["labels"] == ["simulated", "synthetic"]


def _make_old(db_path) -> None:
    """Turn an index into one an older melt wrote: no new indexes, run rows of the old shape,
    one run not indexed at all, and job rows without labels."""
    db = sqlite3.connect(db_path)
    for name in ("jobs_cell_status", "jobs_device_status", "runs_created"):
        db.execute(f"DROP INDEX {name}")
    db.execute("CREATE INDEX jobs_cell ON jobs (cell_id)")
    db.execute("CREATE INDEX metrics_name ON metrics (name)")
    db.execute("UPDATE runs SET row_version = NULL, total_jobs = NULL")
    first = db.execute("SELECT run_id FROM runs ORDER BY created_at LIMIT 1").fetchone()[0]
    db.execute("DELETE FROM runs WHERE run_id = ?", (first,))
    db.execute("DELETE FROM jobs WHERE run_id = ?", (first,))
    db.execute("UPDATE jobs SET labels = NULL")
    db.commit()
    db.close()


def test_an_older_index_still_answers_and_is_upgraded(history_store):
    want = file_listing(history_store)
    cur = history_store.runs()[-1]
    before = compare_history(history_store, cur.run_id, 3).as_dict()
    history_store.index.close()
    db = history_store.root / "melt.db"
    _make_old(db)
    store = ResultsStore(history_store.root)
    assert store.run_summaries() == want  # the missing run indexed from its files, the rest upgraded
    assert json.dumps(compare_history(store, cur.run_id, 3).as_dict(), sort_keys=True, default=str) == \
        json.dumps(before, sort_keys=True, default=str)
    names = {r[0] for r in store.index.query("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"jobs_cell_status", "jobs_device_status", "runs_created"} <= names and not names & {"jobs_cell", "metrics_name"}
    versions = {r[0] for r in store.index.query("SELECT row_version FROM runs")}
    assert versions == {2}


def test_a_damaged_index_still_lists_from_the_files(history_store):
    want = file_listing(history_store)
    history_store.index.close()
    for suffix in ("", "-wal", "-shm"):
        (history_store.root / f"melt.db{suffix}").unlink(missing_ok=True)
    (history_store.root / "melt.db").write_bytes(b"not a database" * 100)
    store = ResultsStore(history_store.root)
    assert store.run_summaries() == want
    assert store.run_ids() == [r["run_id"] for r in want]

"""Results store: atomic files, torn journals, schema versions, the index."""

from __future__ import annotations

import json

import pytest

from melt.errors import ResultsError
from melt.store.atomic import atomic_write_json, read_json_lines
from melt.store.runs import ResultsStore
from melt.store.schema import SCHEMA_VERSION


def record(job_id: str, status: str = "ok", **metrics) -> dict:
    return {"job_id": job_id, "cell_id": "c", "status": status, "reason": None if status == "ok" else "boom",
            "device": "d", "framework": "llama.cpp", "model": "m", "workload": "w", "kind": "bench",
            "params": {"n_prompt": 8}, "repetition": 0, "simulated": False, "metrics": metrics,
            "provenance": {}}


def test_run_round_trip_and_index(tmp_path):
    store = ResultsStore(tmp_path)
    run = store.create_run({"name": "e"}, experiment_path=None, host={})
    run.save_job(record("a", decode_tps=12.5), {"stdout.txt": b"out"})
    run.save_job(record("b", "failed"))
    again = store.open_run(run.run_id)
    shown = again.as_dict()
    assert shown["schema_version"] == SCHEMA_VERSION
    assert [j["job_id"] for j in shown["jobs"]] == ["a", "b"]
    assert shown["jobs"][0]["metrics"] == {"decode_tps": 12.5}
    assert shown["jobs"][1]["reason"] == "boom"
    assert (again.job_dir("a") / "stdout.txt").read_bytes() == b"out"
    rows = store.index.query("SELECT value FROM metrics WHERE name='decode_tps'")
    assert [r["value"] for r in rows] == [12.5]


def test_torn_journal_line_is_ignored(tmp_path):
    store = ResultsStore(tmp_path)
    run = store.create_run({"name": "e"}, experiment_path=None, host={})
    run.save_job(record("a"))
    with open(run.dir / "journal.jsonl", "a") as f:
        f.write('{"job_id": "b", "sta')  # a crash mid-write
    assert list(store.open_run(run.run_id).journal()) == ["a"]


def test_atomic_write_leaves_no_temp_files(tmp_path):
    atomic_write_json(tmp_path / "x.json", {"a": 1})
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": 1}


def test_newer_schema_is_refused_clearly(tmp_path):
    store = ResultsStore(tmp_path)
    run = store.create_run({"name": "e"}, experiment_path=None, host={})
    manifest = json.loads((run.dir / "manifest.json").read_text())
    manifest["schema_version"] = SCHEMA_VERSION + 1
    (run.dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ResultsError, match="upgrade melt"):
        store.open_run(run.run_id)


def test_resolve_prefix_latest_and_unknown(tmp_path):
    store = ResultsStore(tmp_path)
    a = store.create_run({"name": "e"}, experiment_path=None, host={})
    assert store.resolve("latest") == a.run_id
    assert store.resolve(a.run_id[:10]) == a.run_id
    with pytest.raises(ResultsError, match="no run 'nope'"):
        store.resolve("nope")


def test_reindex_rebuilds_from_folders(tmp_path):
    store = ResultsStore(tmp_path)
    run = store.create_run({"name": "e"}, experiment_path=None, host={})
    run.save_job(record("a", prefill_tps=100.0))
    store.index.close()
    (tmp_path / "melt.db").unlink()
    fresh = ResultsStore(tmp_path)
    assert fresh.reindex() == 1
    assert fresh.index.query("SELECT count(*) AS n FROM jobs")[0]["n"] == 1


def test_read_json_lines_skips_garbage(tmp_path):
    p = tmp_path / "j.jsonl"
    p.write_text('{"a": 1}\nnot json\n[1,2]\n{"b": 2}\n')
    assert read_json_lines(p) == [{"a": 1}, {"b": 2}]


def test_golden_v1_run_still_loads(tmp_path):
    import shutil
    from pathlib import Path

    golden = Path(__file__).resolve().parents[1] / "data" / "results" / "v1"
    shutil.copytree(golden, tmp_path, dirs_exist_ok=True)
    store = ResultsStore(tmp_path)
    shown = store.open_run("20260101-000000-0001").as_dict()
    assert shown["schema_version"] == SCHEMA_VERSION
    ok, failed = shown["jobs"]
    assert ok["metrics"]["decode_tps"] == 20.0 and ok["phases"][0]["name"] == "prefill"
    assert failed["status"] == "failed" and failed["reason"].startswith("llama-bench exited")
    assert store.reindex() == 2


def test_an_index_from_before_the_execution_column_gains_it(tmp_path):
    import sqlite3

    from melt.store.index import Index

    path = tmp_path / "melt.db"
    old = sqlite3.connect(path)
    old.execute("CREATE TABLE jobs (run_id TEXT, job_id TEXT, cell_id TEXT, status TEXT, reason TEXT, "
                "device TEXT, framework TEXT, model TEXT, workload TEXT, kind TEXT, params TEXT, "
                "repetition INTEGER, simulated INTEGER, started_at TEXT, PRIMARY KEY (run_id, job_id))")
    old.execute("INSERT INTO jobs VALUES ('r0','j0','c','ok',NULL,'d','f','m','w','bench','{}',0,0,NULL)")
    old.commit()
    old.close()
    index = Index(path)
    index.add_job("r1", {"job_id": "j1", "cell_id": "c", "status": "ok", "emulated": True,
                         "provenance": {"framework_build": {"abi": "arm64-v8a"}}})
    rows = {r["job_id"]: r["execution"] for r in index.query("SELECT job_id, execution FROM jobs")}
    assert rows == {"j0": None, "j1": "arm64-v8a (emulated)"}  # old rows kept, unknown
    index.close()

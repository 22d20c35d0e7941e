"""melt results list / show / export on a stored run (no device needed)."""

from __future__ import annotations

import json

import pandas as pd

from melt.store.runs import ResultsStore
from tests.helpers import melt


def make_run(root):
    store = ResultsStore(root)
    run = store.create_run({"name": "exp"}, experiment_path=None, host={})
    for i, tps in enumerate([10.0, 11.0]):
        run.save_job({"job_id": f"j{i}", "cell_id": "c", "status": "ok", "reason": None, "device": "d",
                      "framework": "llama.cpp", "model": "m", "workload": "w", "kind": "bench",
                      "params": {"n_gen": 8}, "repetition": i, "simulated": False,
                      "metrics": {"decode_tps": tps}, "provenance": {"command": "x"}})
    run.save_job({"job_id": "j9", "cell_id": "c2", "status": "failed", "reason": "exit 1: boom", "device": "d",
                  "framework": "llama.cpp", "model": "m", "workload": "w", "kind": "bench",
                  "params": {"n_gen": 8}, "repetition": 0, "simulated": False, "metrics": {}, "provenance": {}})
    run.update(status="complete-with-failures", total_jobs=3)
    return run


def test_list_json_oldest_first(tmp_path):
    a = make_run(tmp_path)
    b = make_run(tmp_path)
    out = melt("results", "list", "--json", "--results", str(tmp_path))
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert [r["run_id"] for r in rows] == [a.run_id, b.run_id]  # in the order they were made
    assert rows[0]["jobs_ok"] == 2 and rows[0]["jobs_total"] == 3


def test_show_json_shape(tmp_path):
    run = make_run(tmp_path)
    data = json.loads(melt("results", "show", run.run_id, "--json", "--results", str(tmp_path)).stdout)
    assert set(data) >= {"run_id", "schema_version", "jobs"}
    job = data["jobs"][0]
    assert set(job) >= {"job_id", "status", "reason", "device", "framework", "model", "workload", "params",
                        "repetition", "metrics", "provenance"}
    assert data["jobs"][2]["reason"] == "exit 1: boom"


def test_export_csv_json_parquet(tmp_path):
    run = make_run(tmp_path)
    csv = melt("results", "export", run.run_id, "--format", "csv", "--results", str(tmp_path))
    assert csv.returncode == 0 and "decode_tps" in csv.stdout.splitlines()[0]
    js = json.loads(melt("results", "export", run.run_id, "--format", "json", "--results", str(tmp_path)).stdout)
    assert [r["decode_tps"] for r in js] == [10.0, 11.0, None]  # absent, not zero
    pq = tmp_path / "out.parquet"
    out = melt("results", "export", run.run_id, "--format", "parquet", "-o", str(pq), "--results", str(tmp_path))
    assert out.returncode == 0, out.stderr
    frame = pd.read_parquet(pq)
    assert len(frame) == 3 and frame["decode_tps"].isna().sum() == 1


def test_devices_lists_local(tmp_path):
    out = melt("devices", "local", "--json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)["devices"]
    assert rows[0]["name"] == "local" and rows[0]["status"] == "ready"
    assert rows[0]["properties"]["cpu_count"] >= 1


def test_export_llama_bench_sql_loads_into_sqlite(tmp_path):
    import sqlite3

    run = make_run(tmp_path)
    out = melt("results", "export", run.run_id, "--format", "llama-bench-sql", "--results", str(tmp_path))
    assert out.returncode == 0, out.stderr
    db = sqlite3.connect(":memory:")
    db.executescript(out.stdout)
    tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    assert tables
    assert db.execute(f"SELECT count(*) FROM {tables[0]}").fetchone()[0] >= 1

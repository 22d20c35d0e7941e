"""A llama-bench SQL export of a hostile device's output is data for the sqlite3 shell, never a command.

The device prints llama-bench JSON whose keys and values try to break out of
the SQL (a column name that closes ``CREATE TABLE``, strings holding a newline
and a dot-command). The export is piped into the real ``sqlite3`` program, as
docs/reports.md shows; nothing may run and every value must read back as printed.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from melt.analysis.export import sql_identifier, to_sql
from tests.helpers import melt, need

DATA = Path(__file__).resolve().parents[1] / "data"
JSONL = DATA / "llama_bench" / "gemma3_270m_host_two_jobs.jsonl"

HOSTILE_KEYS = {
    "x INTEGER);\n.system touch pwned_key\n--": 1,
    'q"); .shell touch pwned_quote; --': 2,
    "AVG_TS": 3.0,  # one column to SQLite with avg_ts
}
HOSTILE_VALUES = {
    "cpu_info": "Cortex\n.system touch pwned_system\n",
    "gpu_info": "x');\n.shell touch pwned_shell\n--",
    "model_type": "gemma\r\n.once pwned_once\r\nSELECT 1;",
    "backends": "'\n.output pwned_output\n'\x00\x7f",
    "extra_note": "\n.system touch pwned_extra",  # a field of some other llama-bench: kept, typed TEXT
}


def _hostile_stdout() -> str:
    rows = [json.loads(x) for x in JSONL.read_text().splitlines()]
    for row in rows:
        row.update(HOSTILE_KEYS)
        row.update(HOSTILE_VALUES)
    return "".join(json.dumps(r) + "\n" for r in rows)


def _store_run(results: Path, stdout: str) -> str:
    from melt.store.runs import ResultsStore

    run = ResultsStore(results).create_run({"name": "hostile"}, experiment_path=None, host={})
    record = {"job_id": "job0", "cell_id": "cell", "status": "ok", "reason": None, "device": "phone",
              "framework": "llama.cpp", "model": "gemma", "workload": "bench", "kind": "bench",
              "params": {"n_prompt": 8, "n_gen": 4}, "repetition": 0, "simulated": False,
              "emulated": False, "metrics": {}, "provenance": {}}
    run.save_job(record, {"stdout.txt": stdout.encode()})
    run.update(status="complete", total_jobs=1)
    return run.run_id


def test_hostile_export_piped_into_sqlite3_runs_nothing_and_round_trips(tmp_path):
    need(shutil.which("sqlite3") is not None, "the sqlite3 command-line program")
    results = tmp_path / "results"
    run_id = _store_run(results, _hostile_stdout())
    out = melt("results", "export", run_id, "--format", "llama-bench-sql", "--results", str(results))
    assert out.returncode == 0, out.stderr
    assert not any(line.startswith(".") for line in out.stdout.splitlines())

    work = tmp_path / "work"
    work.mkdir()
    done = subprocess.run(["sqlite3", "llama-bench.sqlite"], input=out.stdout, cwd=work,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    # no .system/.shell touched a file, no .once/.output opened one: the database is all there is
    assert sorted(p.name for p in work.iterdir()) == ["llama-bench.sqlite"]
    assert not list(tmp_path.rglob("pwned*")) and not list(Path.cwd().glob("pwned*"))

    db = sqlite3.connect(work / "llama-bench.sqlite")
    cols = [r[1] for r in db.execute("PRAGMA table_info(llama_bench)")]
    assert "extra_note" in cols and not set(HOSTILE_KEYS) & set(cols)
    assert cols.count("avg_ts") == 1 and "AVG_TS" not in cols
    printed = [json.loads(x) for x in _hostile_stdout().splitlines()]
    got = db.execute("SELECT cpu_info, gpu_info, model_type, backends, extra_note, n_prompt, n_gen, "
                     "avg_ns FROM llama_bench").fetchall()
    assert got == [tuple(r[k] for k in (*HOSTILE_VALUES, "n_prompt", "n_gen", "avg_ns")) for r in printed]


def test_every_line_of_the_sql_is_ours():
    """Values with any control character stay on their INSERT's line; names are quoted identifiers."""
    nasty = "".join(chr(c) for c in range(0x20)) + "\x7f'\"\\;--.system x"
    sql = to_sql([{"n_prompt": 1, "n_gen": 0, "avg_ts": 1.0, "cpu_info": nasty}])
    lines = sql.splitlines()
    inserts = [ln for ln in lines if ln.startswith("INSERT")]
    assert len(inserts) == 1 and len(lines) == lines.index(inserts[0]) + 1
    db = sqlite3.connect(":memory:")
    db.executescript(sql)
    assert db.execute("SELECT cpu_info FROM llama_bench").fetchone()[0] == nasty


def test_table_and_column_names_must_be_plain_identifiers():
    assert sql_identifier("llama_bench") == '"llama_bench"'
    for bad in ("", "1x", "a b", 'a"b', "a;", "x\n", "é"):
        with pytest.raises(ValueError, match="not a plain SQL identifier"):
            sql_identifier(bad)
    with pytest.raises(ValueError, match="not a plain SQL identifier"):
        to_sql([], table="t; .system touch pwned")

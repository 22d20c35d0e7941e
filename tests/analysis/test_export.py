"""llama-bench exports: llama-bench's printed rows handed on, reconstructed rows for old runs."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from melt.analysis import synthetic as syn
from melt.analysis.export import (DEFAULTS, FIELDS, MELT_FIELDS, BenchJob, bench_jobs, export_llama_bench,
                                  llama_bench_rows, render, rows_for_job)
from melt.parsers.llama_bench import parse_llama_bench, printed_rows
from tests.helpers import error_line, melt

DATA = Path(__file__).resolve().parents[1] / "data"
# stdout of two real bench jobs (llama-bench -o jsonl, Gemma 3 270M, host build): see its .source.txt
JSONL = DATA / "llama_bench" / "gemma3_270m_host_two_jobs.jsonl"
# llama-bench's README example (-o json, build 8cf427ff, an older field set)
OLD_JSON = DATA / "parsers" / "llamabench_json_b5163_readme.json"
MARKDOWN = DATA / "parsers" / "llamabench_md_jetson_nano_b5043_gemma3.txt"

# What llama.cpp's compare-llama-bench.py (in the tree melt builds) requires in every row:
# its LLAMA_BENCH_KEY_PROPERTIES plus build_commit, test_time and avg_ts.
REQUIRED = {"cpu_info", "gpu_info", "backends", "n_gpu_layers", "n_cpu_moe", "tensor_buft_overrides",
            "model_filename", "model_type", "n_batch", "n_ubatch", "embeddings", "cpu_mask", "cpu_strict",
            "poll", "n_threads", "type_k", "type_v", "load_mode", "no_kv_offload", "split_mode", "main_gpu",
            "tensor_split", "flash_attn", "n_prompt", "n_gen", "n_depth", "fit_target", "fit_min_ctx",
            "build_commit", "test_time", "avg_ts"}
MELT = [n for n, _ in MELT_FIELDS]


def _job_stdouts() -> list[str]:
    """The capture holds two jobs' stdout, one after the other (two lines each)."""
    lines = JSONL.read_text().splitlines(keepends=True)
    return ["".join(lines[:2]), "".join(lines[2:])]


def _record(i: int, **extra) -> dict:
    return {"job_id": f"job{i}", "cell_id": "cell", "status": "ok", "reason": None, "device": "pixel-8",
            "framework": "llama.cpp", "model": "gemma", "workload": "bench", "kind": "bench",
            "params": {"n_prompt": 8, "n_gen": 4, "threads": 1, "repetitions": 2}, "repetition": i,
            "simulated": False, "emulated": False, "started_at": "2026-11-30T02:00:00+00:00",
            "metrics": {"prefill_tps": 100.0, "decode_tps": 10.0}, "provenance": {}, **extra}


def _stored_run(store, stdouts: list[str | None]):
    run = store.create_run({"name": "exp"}, experiment_path=None, host={})
    for i, text in enumerate(stdouts):
        run.save_job(_record(i), {"stdout.txt": text.encode()} if text is not None else {})
    run.update(status="complete", total_jobs=len(stdouts))
    return run


def test_printed_rows_are_llama_bench_objects_unchanged():
    text = JSONL.read_text()
    rows = printed_rows(text)
    assert rows == [json.loads(x) for x in text.splitlines()]
    assert list(rows[0])[:3] == ["build_commit", "build_number", "cpu_info"]  # order kept
    assert printed_rows("llama-bench: benchmark 1/2\n" + text + '{"avg_ts": 1, "n_prompt"') == rows
    old = printed_rows(OLD_JSON.read_text())  # -o json, as melt ran it before -o jsonl
    assert [r["avg_ts"] for r in old] == [r["avg_ts"] for r in json.loads(OLD_JSON.read_text())]
    assert printed_rows(MARKDOWN.read_text()) == []  # markdown lost the types: not "as printed"
    assert printed_rows('{"n_prompt": 8, "n_gen": 0, "avg_ts": NaN}\n{"n_prompt": 8, "n_gen": 0, '
                        '"avg_ts": 1e999}\n') == []  # never a non-finite number handed on


def test_export_hands_on_llama_bench_rows_as_printed(store):
    run = _stored_run(store, _job_stdouts())
    rows = llama_bench_rows(bench_jobs([run]))
    raw = printed_rows(JSONL.read_text())
    assert len(rows) == 4  # two jobs (melt repetitions), a pp and a tg row each: not merged
    for got, want in zip(rows, raw):
        assert {k: v for k, v in got.items() if k not in MELT} == want
        assert list(got) == list(want) + MELT  # llama-bench's fields first, in its order
        assert REQUIRED <= set(got)
        assert got["cpu_info"] == want["cpu_info"] != "pixel-8"  # llama-bench's, not melt's device name
        assert got["melt_device"] == "pixel-8" and got["melt_reconstructed"] == ""
        assert got["melt_run_id"] == run.run_id
    assert [r["melt_repetition"] for r in rows] == [0, 0, 1, 1]
    assert [r["avg_ts"] for r in rows] == [r["avg_ts"] for r in raw]
    lines = export_llama_bench([run], "jsonl").splitlines()
    assert [json.loads(x) for x in lines] == rows
    assert json.loads(export_llama_bench([run], "json")) == rows
    assert len(parse_llama_bench(export_llama_bench([run], "json"))) == 4  # melt's own reader too


def test_sql_has_llama_bench_columns_and_values(store):
    run = _stored_run(store, _job_stdouts())
    db = sqlite3.connect(":memory:")
    db.executescript(export_llama_bench([run], "sql"))
    cols = [r[1] for r in db.execute("PRAGMA table_info(llama_bench)")]
    assert cols == [n for n, _ in FIELDS] + MELT
    got = db.execute("SELECT cpu_strict, no_host, repack, avg_ts, n_cpu_moe, load_mode, fit_target, "
                     "melt_simulated FROM llama_bench").fetchall()
    raw = printed_rows(JSONL.read_text())
    assert [g[3] for g in got] == [r["avg_ts"] for r in raw]
    assert {g[:3] for g in got} == {(int(raw[0]["cpu_strict"]), int(raw[0]["no_host"]), int(raw[0]["repack"]))}
    assert {g[4:] for g in got} == {(raw[0]["n_cpu_moe"], raw[0]["load_mode"], raw[0]["fit_target"], 0)}


def test_rows_of_another_llama_bench_version_keep_their_fields(store):
    """-o json output of an older llama-bench (use_mmap, no load_mode): its own field set, in SQL too."""
    run = _stored_run(store, [OLD_JSON.read_text()])
    rows = llama_bench_rows(bench_jobs([run]))
    assert rows[0]["use_mmap"] is True and "load_mode" not in rows[0]
    db = sqlite3.connect(":memory:")
    db.executescript(render(rows, "sql"))
    cols = [r[1] for r in db.execute("PRAGMA table_info(llama_bench)")]
    assert "use_mmap" in cols and "load_mode" not in cols and cols[-len(MELT):] == MELT
    assert db.execute("SELECT COUNT(*) FROM llama_bench").fetchone()[0] == len(rows) == 2


def test_runs_without_printed_rows_are_reconstructed_with_the_current_field_set(store, cells):
    """A synthetic run has no stdout: rows from the records, llama-bench's defaults, named as reconstructed."""
    run = syn.make_run(store, cells[:2], repetitions=3, failed={cells[1].cell_id: "boom"})
    rows = llama_bench_rows(bench_jobs([run]))
    ok = [j for j in run.jobs() if j["status"] == "ok"]
    assert len(rows) == 2 * len(ok) == 6  # one pp and one tg row per ok job
    for row in rows:
        assert list(row) == [n for n, _ in FIELDS] + MELT
        assert REQUIRED <= set(row) and "samples_ns" not in row
        assert {k: row[k] for k in DEFAULTS if k not in ("n_batch", "n_depth")} == \
            {k: v for k, v in DEFAULTS.items() if k not in ("n_batch", "n_depth")}
        guessed = row["melt_reconstructed"].split(",")
        assert {"cpu_info", "avg_ns", "stddev_ns", "model_type", "test_time"} <= set(guessed)
        assert row["melt_simulated"] is True
    tg = [r for r in rows if r["n_gen"]]
    assert [r["avg_ts"] for r in tg] == [round(j["metrics"]["decode_tps"], 6) for j in ok]
    assert tg[0]["avg_ns"] == round(16 * 1e9 / ok[0]["metrics"]["decode_tps"])
    assert [r["n_threads"] for r in tg] == [4, 4, 4]


def test_reconstruction_reads_the_build_model_and_command(store):
    md = MARKDOWN.read_text()  # markdown stdout: no typed rows to hand on
    rec = _record(0, provenance={
        "framework_build": {"build_commit": "0c1e5709", "cmake_flags": {"LLAMA_BUILD_NUMBER": "0"}},
        "model": {"architecture": "gemma3", "quantization": "Q4_K_M", "size_bytes": 253113024,
                  "n_params": 268098176},
        "device": {"cpu_model": "Cortex-A76"},
        "command": "/data/local/tmp/melt/bin/llama-bench -m '/data/local/tmp/melt/g m.gguf' -p 8 -n 4"})
    rows = rows_for_job(BenchJob(rec, "r1", md))
    assert [(r["n_prompt"], r["n_gen"], r["avg_ts"]) for r in rows] == [(8, 0, 100.0), (0, 4, 10.0)]
    pp = rows[0]
    assert (pp["build_commit"], pp["build_number"], pp["cpu_info"]) == ("0c1e5709", 0, "Cortex-A76")
    assert pp["model_filename"] == "/data/local/tmp/melt/g m.gguf" and pp["model_n_params"] == 268098176
    assert pp["test_time"] == "2026-11-30T02:00:00Z"
    # two timed runs (-r 2) but no spread in the record: stddev_ts is named too
    assert pp["melt_reconstructed"] == "cpu_info,model_type,model_size,test_time,avg_ns,stddev_ns,stddev_ts"
    # and without them: named as inferred, never silently
    bare = rows_for_job(BenchJob(_record(0), "r1", None))[0]
    assert bare["build_commit"] == "unknown" and bare["cpu_info"] == "pixel-8"
    assert {"build_commit", "build_number", "model_filename", "model_n_params"} <= \
        set(bare["melt_reconstructed"].split(","))


def test_failed_and_other_kinds_are_not_exported(store):
    jobs = [BenchJob(_record(0, status="failed"), "r", JSONL.read_text()),
            BenchJob(_record(1, kind="generate"), "r", JSONL.read_text())]
    assert llama_bench_rows(jobs) == []


def test_build_commit_relabels_rows(store):
    run = _stored_run(store, _job_stdouts())
    assert {r["build_commit"] for r in llama_bench_rows(bench_jobs([run]), build_commit="run")} == {run.run_id}
    assert {r["build_commit"] for r in llama_bench_rows(bench_jobs([run]), build_commit="base")} == {"base"}


def test_quotes_in_names_survive_sql(store):
    cell = syn.Cell(model="it's \"odd\"; DROP TABLE x")
    run = syn.make_run(store, [cell], repetitions=1)
    db = sqlite3.connect(":memory:")
    db.executescript(export_llama_bench([run], "sql"))
    assert db.execute("SELECT DISTINCT model_type FROM llama_bench").fetchone()[0].startswith("it's")


def test_cli_exports_and_refuses_an_empty_export(store, tmp_path):
    run = _stored_run(store, _job_stdouts())
    out = melt("results", "export", run.run_id, "--format", "llama-bench-jsonl", "--build-commit", "run",
               "--results", str(store.root))
    assert out.returncode == 0, out.stderr
    assert [json.loads(x)["build_commit"] for x in out.stdout.splitlines()] == [run.run_id] * 4
    empty = store.create_run({"name": "e"}, experiment_path=None, host={})
    out = melt("results", "export", empty.run_id, "--format", "llama-bench-sql", "--results", str(store.root))
    assert out.returncode == 1 and "no successful bench job" in out.stderr and "Traceback" not in out.stderr
    out = melt("results", "export", run.run_id, "--format", "csv", "--build-commit", "run",
               "--results", str(store.root))
    assert "llama-bench-* formats only" in error_line(out)

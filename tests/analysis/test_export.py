from __future__ import annotations

import json
import sqlite3

from melt.analysis import synthetic as syn
from melt.analysis.export import FIELDS, export_llama_bench, llama_bench_rows
from melt.parsers.llama_bench import parse_llama_bench

# The keys llama.cpp's compare-llama-bench.py requires in every row.
REQUIRED = {"cpu_info", "gpu_info", "backends", "n_gpu_layers", "tensor_buft_overrides", "model_filename",
            "model_type", "n_batch", "n_ubatch", "embeddings", "cpu_mask", "cpu_strict", "poll",
            "n_threads", "type_k", "type_v", "use_mmap", "no_kv_offload", "split_mode", "main_gpu",
            "tensor_split", "flash_attn", "n_prompt", "n_gen", "n_depth", "build_commit", "test_time", "avg_ts"}


def _jobs(store, cells):
    run = syn.make_run(store, cells, repetitions=3, failed={cells[1].cell_id: "boom"})
    return run.jobs()


def test_rows_have_llama_bench_fields_and_samples(store, cells):
    jobs = _jobs(store, cells[:2])
    rows = llama_bench_rows(jobs)
    assert len(rows) == 2  # pp and tg of the one ok cell
    pp, tg = rows
    assert REQUIRED <= set(pp)
    assert (pp["n_prompt"], pp["n_gen"], tg["n_prompt"], tg["n_gen"]) == (64, 0, 0, 16)
    decode = [j["metrics"]["decode_tps"] for j in jobs if j["cell_id"] == cells[0].cell_id]
    assert sorted(tg["samples_ts"]) == sorted(round(v, 6) for v in decode)
    assert abs(tg["avg_ts"] - sum(decode) / 3) < 1e-4
    assert "[simulated]" in tg["cpu_info"]


def test_json_and_sql_load_like_llama_bench_output(store, cells):
    jobs = _jobs(store, cells)
    text = export_llama_bench(jobs, "json")
    rows = json.loads(text)
    assert all(REQUIRED <= set(r) for r in rows)
    parsed = parse_llama_bench(text)  # melt's own llama-bench reader accepts it
    assert len(parsed) == len(rows)
    sql = export_llama_bench(jobs, "sql")
    db = sqlite3.connect(":memory:")
    db.executescript(sql)
    got = db.execute("SELECT n_prompt, n_gen, avg_ts, cpu_info FROM llama_bench").fetchall()
    assert len(got) == len(rows) == 2 * (len(cells) - 1)
    cols = [r[1] for r in db.execute("PRAGMA table_info(llama_bench)")]
    assert cols == [n for n, _ in FIELDS]
    lines = export_llama_bench(jobs, "jsonl").splitlines()
    assert [json.loads(x) for x in lines] == rows


def test_quotes_in_names_survive_sql(store):
    cell = syn.Cell(model="it's \"odd\"; DROP TABLE x")
    run = syn.make_run(store, [cell], repetitions=1)
    db = sqlite3.connect(":memory:")
    db.executescript(export_llama_bench(run.jobs(), "sql"))
    assert db.execute("SELECT DISTINCT model_type FROM llama_bench").fetchone()[0].startswith("it's")

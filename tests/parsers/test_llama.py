"""llama.cpp timing blocks and llama-bench results on real captures."""

from __future__ import annotations

import pytest

from melt.parsers.llama_bench import parse_llama_bench
from melt.parsers.llamacpp import parse_timings
from tests.parsers.conftest import read

OLD = """\
llama_model_loader: loaded meta data with 19 key-value pairs and 291 tensors from models/7B/q4_0.gguf (version GGUF V2)
llama_print_timings:        load time =   340.50 ms
llama_print_timings:      sample time =    23.44 ms /    64 runs   (    0.37 ms per token,  2730.84 tokens per second)
llama_print_timings: prompt eval time =   818.94 ms /     9 tokens (   90.99 ms per token,    10.99 tokens per second)
llama_print_timings:        eval time =  4882.82 ms /    63 runs   (   77.50 ms per token,    12.90 tokens per second)
llama_print_timings:       total time =  5741.82 ms
"""


def test_old_prefix_block() -> None:
    [rec] = parse_timings(OLD)
    assert rec == {
        "model": "models/7B/q4_0.gguf", "load_ms": 340.5, "sample_ms": 23.44, "sample_runs": 64,
        "prompt_ms": 818.94, "prompt_tokens": 9, "prefill_tps": 10.99, "decode_ms": 4882.82,
        "gen_tokens": 63, "decode_tps": 12.9, "total_ms": 5741.82,
    }


def test_oldest_lines_without_tps_leave_rates_missing() -> None:
    text = (
        "llama_print_timings: prompt eval time =   818.94 ms /     9 tokens (   90.99 ms per token)\n"
        "llama_print_timings:        eval time =  4882.82 ms /    63 runs   (   77.50 ms per run)\n"
    )
    [rec] = parse_timings(text)
    assert rec["prompt_tokens"] == 9 and rec["gen_tokens"] == 63
    assert "prefill_tps" not in rec and "decode_tps" not in rec


def test_new_prefixes_comma_locale_junk_and_interruption() -> None:
    text = (
        "Once upon a time\n"
        "> \nInterrupted by user\n"
        "llama_perf_sampler_print:    sampling time =       6,71 ms /    74 runs   (    0,09 ms per token, 11028,32 tokens per second)\n"
        "the end.llama_perf_context_print:        load time =     585,87 ms\n"
        "llama_perf_context_print: prompt eval time =     108,33 ms /    10 tokens (   10,83 ms per token,    92,31 tokens per second) xx\n"
        "llama_perf_context_print:        eval time =    1357,50 ms /    63 runs   (   21,55 ms per token,    46,41 tokens per second)\n"
        "llama_perf_context_print:       total time =    1475,54 ms /    73 tokens\n"
    )
    [rec] = parse_timings(text)
    assert rec["interrupted"] is True
    assert rec["sample_ms"] == 6.71 and rec["load_ms"] == 585.87
    assert rec["prefill_tps"] == 92.31 and rec["decode_tps"] == 46.41
    assert rec["total_tokens"] == 73


def test_several_runs_are_kept_in_order() -> None:
    recs = parse_timings(OLD + OLD.replace("12.90", "13.90"))
    assert [r["decode_tps"] for r in recs] == [12.9, 13.9]


def test_common_perf_print_capture() -> None:
    [rec] = parse_timings(read("llamacpp_common_perf_print_pr17382.txt"))
    assert rec["prompt_tokens"] == 8 and rec["prefill_tps"] == 420.28
    assert rec["gen_tokens"] == 511 and rec["decode_tps"] == 105.3
    assert rec["total_ms"] == 4945.97 and rec["total_tokens"] == 519 and rec["graphs_reused"] == 508


def test_log_without_timings_gives_no_record() -> None:
    assert parse_timings(read("melt_dummy_file.llamacpp.log")) == []


@pytest.mark.parametrize(
    "name, model, size_mib, params, rows",
    [
        ("llamabench_md_jetson_nano_b5043_gemma3.txt", "gemma3 1B Q4_K - Medium", 762.49, 999_890_000,
         [(512, 0, 116.49, 0.07), (0, 128, 5.93, 0.01)]),
        ("llamabench_md_jetson_nano_b5043_tinyllama.txt", "llama 1B Q4_K - Medium", 636.18, 1_100_000_000,
         [(512, 0, 80.57, 0.33), (0, 128, 6.69, 0.0)]),
    ],
)
def test_markdown_jetson_nano(name: str, model: str, size_mib: float, params: int, rows: list) -> None:
    recs = parse_llama_bench(read(name))
    assert len(recs) == len(rows)
    for rec, (n_prompt, n_gen, avg, std) in zip(recs, rows):
        assert rec["model"] == model and rec["backend"] == "CUDA" and rec["n_gpu_layers"] == 99
        assert abs(rec["model_size_bytes"] - size_mib * 2**20) < 2**20 * 0.01
        assert rec["model_n_params"] == params
        assert (rec["n_prompt"], rec["n_gen"], rec["avg_tps"], rec["stddev_tps"]) == (n_prompt, n_gen, avg, std)
        assert rec["build_commit"] == "c262bedd" and rec["build_number"] == 5043
        assert "n_depth" not in rec


def test_markdown_old_test_names_and_depth() -> None:
    recs = parse_llama_bench(read("llamabench_md_readme_old_pp_space.txt"))
    assert [(r["n_prompt"], r["n_gen"]) for r in recs] == [(0, 128), (0, 256), (0, 128), (512, 0), (0, 128)]
    assert recs[-1]["n_depth"] == 512 and recs[-1]["avg_tps"] == 116.71
    assert recs[2]["model_n_params"] == 13_020_000_000


def test_markdown_early_compact_columns() -> None:
    recs = parse_llama_bench(read("llamabench_md_pr2626_early_columns.txt"))
    assert [(r["n_prompt"], r["n_gen"], r["avg_tps"]) for r in recs] == [
        (512, 0, 2153.5), (0, 128, 128.65), (512, 128, 449.72)]


@pytest.mark.parametrize("name", ["llamabench_csv_b5163_readme.csv", "llamabench_json_b5163_readme.json"])
def test_csv_and_json(name: str) -> None:
    recs = parse_llama_bench(read(name))
    assert len(recs) == 2
    pp, tg = recs
    assert pp["model"] == "qwen2 7B Q4_K - Medium" and pp["backend"] == "CUDA"
    assert pp["model_size_bytes"] == 4677120000 and pp["model_n_params"] == 7615616512
    assert pp["n_threads"] == 8 and pp["n_gpu_layers"] == -1
    assert (pp["n_prompt"], pp["n_gen"], pp["n_depth"]) == (512, 0, 0)
    assert (tg["n_prompt"], tg["n_gen"]) == (0, 128)
    assert pp["build_commit"] == "8cf427ff" and pp["build_number"] == 5163
    if name.endswith(".json"):
        assert pp["avg_tps"] == 7100.002165 and pp["samples_ns"][0] == 74601900
    else:
        # the header has more columns than the rows: aligned by plausibility
        assert pp["avg_tps"] == 7285.676949 and tg["stddev_tps"] == 0.430617
        assert pp["test_time"] == "2025-04-24T11:57:09Z"


def test_jsonl_sql_and_old_backend_flags() -> None:
    row = ('{"build_commit": "3c0d25c", "build_number": 1275, "cuda": true, "opencl": false, '
           '"model_type": "llama 7B mostly Q4_0", "n_prompt": 512, "n_gen": 0, "avg_ts": 2134.5, "stddev_ts": 13.4}')
    [rec] = parse_llama_bench("main: log line\n" + row + "\n")
    assert rec["backend"] == "CUDA" and rec["avg_tps"] == 2134.5
    sql = (
        "CREATE TABLE IF NOT EXISTS test (\n  build_commit TEXT,\n  cpu_info TEXT,\n  metal INTEGER,\n"
        "  n_prompt INTEGER,\n  n_gen INTEGER,\n  avg_ts REAL,\n  stddev_ts REAL\n);\n"
        "INSERT INTO test (build_commit, cpu_info, metal, n_prompt, n_gen, avg_ts, stddev_ts) "
        "VALUES ('3c0d25c', 'Apple M2 (it''s fast), 8 cores', '0', '0', '128', '43.1', '0.2');\n"
    )
    [rec] = parse_llama_bench(sql)
    assert rec["cpu_info"] == "Apple M2 (it's fast), 8 cores" and rec["backend"] == "CPU"
    assert (rec["n_gen"], rec["avg_tps"], rec["stddev_tps"]) == (128, 43.1, 0.2)


def test_csv_row_with_unquoted_comma_is_realigned() -> None:
    text = (
        "build_commit,build_number,cpu_info,model_type,model_size,n_prompt,n_gen,test_time,avg_ts,stddev_ts\n"
        "3c0d25c,1275,Intel i9, 12 cores,llama 7B,3825065984,512,0,2023-09-01T00:00:00Z,2134.5,13.4\n"
    )
    [rec] = parse_llama_bench(text)
    assert rec["cpu_info"] == "Intel i9, 12 cores" and rec["model"] == "llama 7B"
    assert rec["avg_tps"] == 2134.5 and rec["n_prompt"] == 512

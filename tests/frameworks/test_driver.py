"""The llama.cpp driver: params, command lines, and metrics from captured output."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from melt.errors import ConfigError, JobFailed, UnknownNameError
from melt.frameworks.llamacpp import LlamaCpp

DATA = Path(__file__).parent / "data"


def read(name: str) -> str:
    return (DATA / name).read_text(errors="replace")  # generated text is random bytes


@pytest.fixture
def fw() -> LlamaCpp:
    return LlamaCpp()


def test_binaries_per_kind(fw):
    assert fw.binaries_for("bench") == ["llama-bench"]
    assert fw.binaries_for("generate") == ["llama-completion"]
    with pytest.raises(UnknownNameError, match="Did you mean: bench"):
        fw.binaries_for("bnech")


def test_unknown_param_lists_known_ones(fw):
    with pytest.raises(UnknownNameError) as err:
        fw.validate_params("bench", {"thread": 4})
    text = str(err.value)
    assert "Unknown llama.cpp bench parameter 'thread'. Did you mean: threads?" in text
    for name in ("n_prompt", "n_gen", "threads", "batch", "depth", "repetitions"):
        assert name in text


def test_bad_values_are_config_errors(fw):
    with pytest.raises(ConfigError, match=r"n_gen: must be an integer >= 0, got -1"):
        fw.validate_params("bench", {"n_gen": -1})
    with pytest.raises(ConfigError, match=r"threads: must be an integer >= 1, got \[1, 2\]"):
        fw.validate_params("bench", {"threads": [1, 2]})
    with pytest.raises(ConfigError, match="at least one must be > 0"):
        fw.validate_params("bench", {"n_prompt": 0, "n_gen": 0})
    with pytest.raises(ConfigError, match="n_predict: must be an integer >= 2"):
        fw.validate_params("generate", {"n_predict": 1})


def test_defaults_filled(fw):
    p = fw.validate_params("generate", {"prompt": "hi", "threads": "2"})
    assert p["prompt"] == "hi" and p["threads"] == 2 and p["n_predict"] == 128


def test_bench_invocation(fw):
    inv = fw.invocation("bench", {"n_prompt": 64, "n_gen": 16, "threads": 2, "batch": 32,
                                  "depth": 128, "repetitions": 3},
                        bin_dir="/data/local/tmp/melt/bin", model_path="/data/local/tmp/m.gguf")
    assert inv.argv == (
        "/data/local/tmp/melt/bin/llama-bench", "-m", "/data/local/tmp/m.gguf",
        "-p", "64", "-n", "16", "-d", "128", "-r", "3", "-o", "jsonl", "-t", "2", "-b", "32",
    )
    assert inv.env["LD_LIBRARY_PATH"] == "/data/local/tmp/melt/bin"
    assert inv.timeout_s > 0


def test_generate_invocation(fw):
    inv = fw.invocation("generate", {"prompt": "Once upon a time", "n_predict": 32, "seed": 7,
                                     "temperature": 0.7, "ctx_size": 512},
                        bin_dir="/opt/melt/bin", model_path="/opt/m.gguf")
    argv = list(inv.argv)
    assert argv[0] == "/opt/melt/bin/llama-completion"
    assert argv[argv.index("-p") + 1] == "Once upon a time"
    assert argv[argv.index("-n") + 1] == "32"
    assert argv[argv.index("-c") + 1] == "512"
    assert argv[argv.index("-s") + 1] == "7"
    assert argv[argv.index("--temp") + 1] == "0.7"
    assert "--ignore-eos" in argv and "-no-cnv" in argv
    assert "-t" not in argv


def test_bench_metrics_from_real_output(fw):
    m = fw.parse_metrics("bench", {"n_prompt": 32, "n_gen": 8}, read("bench-tiny.stdout"),
                         read("bench-tiny.stderr"), 0)
    assert set(m) == {"prefill_tps", "prefill_tps_stddev", "decode_tps", "decode_tps_stddev"}
    assert m["prefill_tps"] > 0 and m["decode_tps"] > 0


def test_bench_missing_row_fails(fw):
    with pytest.raises(JobFailed, match="no tg row"):
        fw.parse_metrics("bench", {"n_prompt": 32, "n_gen": 64},
                         read("bench-tiny.stdout").replace('"n_gen": 8', '"n_gen": 0'), "", 0)


def test_bench_garbage_fails(fw):
    with pytest.raises(JobFailed, match="no llama-bench results in output: }{ not json"):
        fw.parse_metrics("bench", {}, "[\n}{ not json", "", 0)
    zeroed = re.sub(r'"avg_ts": [0-9.eE+-]+', '"avg_ts": 0', read("bench-tiny.stdout"))
    assert zeroed.count('"avg_ts": 0,') == 2
    with pytest.raises(JobFailed, match="prefill tokens/s is not a positive number in the output: 0"):
        fw.parse_metrics("bench", {"n_prompt": 32, "n_gen": 8}, zeroed, "", 0)


def test_generate_metrics_from_real_output(fw):
    m = fw.parse_metrics("generate", {}, read("generate-tiny.stdout"), read("generate-tiny.stderr"), 0)
    assert m["prompt_tokens"] == 17 and m["gen_tokens"] == 7
    assert m["load_ms"] == pytest.approx(2.29)
    assert m["prefill_tps"] == pytest.approx(48850.57)
    assert m["decode_tps"] == pytest.approx(17857.14)
    assert m["ttft_est_ms"] == pytest.approx(0.35 + 0.39 / 7)
    assert "ttft_ms" not in m  # only a measured value has that name
    assert m["total_ms"] == pytest.approx(1.05)
    assert all(v > 0 for v in m.values())


def test_crash_is_a_failed_job_with_exit_code_and_its_cause(fw):
    with pytest.raises(JobFailed) as err:
        fw.parse_metrics("generate", {}, read("generate-missing-model.stdout"),
                         read("generate-missing-model.stderr"), 1)
    assert err.value.reason.startswith("llama-completion exited with code 1: ")
    # the first line naming an error (the cause), not the last one (a symptom), without the log prefix
    assert err.value.reason.endswith(
        "gguf_init_from_file: failed to open GGUF file '/data/local/tmp/melt/missing.gguf' (No such file or directory)")


def test_signal_is_named(fw):
    with pytest.raises(JobFailed, match=r"llama-bench was killed by SIGSEGV \(exit code -11\): boom"):
        fw.parse_metrics("bench", {}, "", "loading\nboom\n", -11)
    with pytest.raises(JobFailed, match=r"exited with code 137 \(SIGKILL\): \(no output\)"):
        fw.parse_metrics("bench", {}, "", "", 137)


def test_lost_timing_lines_fail_never_zero(fw):
    stderr = "\n".join(ln for ln in read("generate-tiny.stderr").splitlines()
                       if "common_perf_print" not in ln)
    with pytest.raises(JobFailed) as err:
        fw.parse_metrics("generate", {}, read("generate-tiny.stdout"), stderr, 0)
    assert err.value.reason.startswith("no timing lines in output: ")


def test_truncated_timing_block_fails(fw):
    lines = read("generate-tiny.stderr").splitlines()
    cut = [ln for ln in lines if "eval time" not in ln and "total time" not in ln]
    with pytest.raises(JobFailed, match="timing lines incomplete, no prompt_ms, prompt_tokens"):
        fw.parse_metrics("generate", {}, "", "\n".join(cut), 0)

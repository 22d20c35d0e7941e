"""Quality jobs on the virtual phone with Gemma: llama-perplexity through melt run, checked by hand.

The phone runs the host build (build_profile: host), so its figures must
match llama-perplexity run directly on this machine on the same file and text.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from melt.errors import ConfigError
from melt.frameworks.llamacpp.driver import LlamaCpp
from melt.parsers.perplexity import parse_perplexity
from melt.runner.engine import run_experiment
from melt.texts import text_path
from tests.android.test_served_workloads import phone_yaml

CTX, CHUNKS = 256, 2  # 256 scored tokens: the KLD statistics need 100; base logits are ~133 MB


@pytest.fixture(scope="module")
def host_build():
    from melt.frameworks.llamacpp.build import host_build

    return host_build(targets=["llama-perplexity"])


def test_quality_on_the_phone_matches_llama_perplexity_by_hand_and_itself(
        tmp_path, adb_server, adb_serial, virtual_phone, host_build, gemma_model):
    exp = tmp_path / "e.yaml"
    exp.write_text(f"""
name: quality
devices: [{phone_yaml(tmp_path, virtual_phone, adb_server)}]
models: [{{name: gemma, path: {gemma_model}}}]
workloads:
  - {{name: ppl, kind: quality, ctx: {CTX}, chunks: {CHUNKS}, threads: 2}}
  - {{name: self, kind: quality, ctx: {CTX}, chunks: {CHUNKS}, reference: host, threads: 2}}
repetitions: 1
warmup: 0
""")
    jobs = {j["workload"]: j for j in run_experiment(exp, results_dir=tmp_path / "r").jobs()}
    assert all(j["status"] == "ok" for j in jobs.values()), {k: j["reason"] for k, j in jobs.items()}
    by_hand = subprocess.run(
        [str(host_build.binaries["llama-perplexity"]), "-m", str(gemma_model), "-f",
         str(text_path("kjv-genesis")), "-c", str(CTX), "--chunks", str(CHUNKS), "-t", "2"],
        capture_output=True, text=True, timeout=600, check=True)
    expected = parse_perplexity(by_hand.stdout + by_hand.stderr)
    m = jobs["ppl"]["metrics"]
    assert m["scored_tokens"] == expected["scored_tokens"] == CHUNKS * (CTX // 2)
    assert abs(m["perplexity"] - expected["perplexity"]) <= m["perplexity_u95"], (m, expected)
    # the model against its own logits from this machine's build
    s = jobs["self"]["metrics"]
    assert s["kld_mean"] < 1e-3 and s["same_top_p"] > 99.0, s
    assert abs(s["ppl_ratio"] - 1.0) < 1e-3 and abs(s["perplexity"] - expected["perplexity"]) <= s["perplexity_u95"]
    assert "kld_mean" not in m  # no reference, no KLD: absent, not zero
    # telemetry as for any job: the run's energy per evaluated token (every token of every chunk)
    assert m["energy_run_j"] > 0 and m["energy_run_j_u95"] > 0
    assert m["energy_per_token_run_j"] == pytest.approx(m["energy_run_j"] / (CHUNKS * CTX))


@pytest.mark.parametrize("params, problem", [
    ({"ctx": 256, "chunks": 8}, "over max_scored_tokens 512"),
    ({"ctx": 64, "chunks": 2, "reference": "host"}, "only from 100"),
    ({"ctx": 2048, "max_scored_tokens": 512}, "less than one chunk"),
])
def test_the_scored_tokens_are_bounded(params, problem):
    with pytest.raises(ConfigError, match=problem):
        LlamaCpp().validate_params("quality", params)


def test_a_reference_that_is_no_model_is_one_line(tmp_path, gemma_model):
    with pytest.raises(ConfigError, match="neither 'host' nor a model"):
        LlamaCpp().job_inputs("quality", {"ctx": 256, "reference": "gemma-q9"}, model_file=gemma_model,
                              model_files={"gemma": gemma_model}, base_dir=tmp_path)


def _ladder_experiment(tmp_path, phone, adb_server, source, variant, name):
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"""
name: ladder-{name}
devices: [{phone_yaml(tmp_path, phone, adb_server)}]
models: [{{name: source, path: {source}}}, {{name: variant, path: {variant}}}]
workloads:
  - {{name: vs-source, kind: quality, ctx: {CTX}, chunks: {CHUNKS}, reference: source, threads: 2}}
repetitions: 1
warmup: 0
""")
    return path


def test_a_lower_quantization_is_worse_against_the_source_and_compare_exits_2(
        tmp_path, adb_server, adb_serial, virtual_phone, host_build, gemma_model):
    from melt.frameworks.llamacpp.build import host_build as build_for_quantize
    from melt.frameworks.llamacpp.quantize import quantize_model

    quantizer = build_for_quantize(targets=["llama-quantize"])
    q8, q2 = tmp_path / "gemma-q8_0.gguf", tmp_path / "gemma-q2_k.gguf"
    assert quantize_model(gemma_model, q8, "Q8_0", build=quantizer)["requantized_from"] == "Q4_K_M"
    quantize_model(gemma_model, q2, "Q2_K", build=quantizer)
    results = tmp_path / "r"
    good = run_experiment(_ladder_experiment(tmp_path, virtual_phone, adb_server, gemma_model, q8, "q8"),
                          results_dir=results)
    bad = run_experiment(_ladder_experiment(tmp_path, virtual_phone, adb_server, gemma_model, q2, "q2"),
                         results_dir=results)
    kld = {}
    for run, label in ((good, "Q8_0"), (bad, "Q2_K")):
        jobs = {j["model"]: j for j in run.jobs()}
        assert all(j["status"] == "ok" for j in jobs.values()), {k: j["reason"] for k, j in jobs.items()}
        assert jobs["source"]["metrics"]["kld_mean"] < 1e-3  # the source against its own logits
        kld[label] = jobs["variant"]["metrics"]
        ref = jobs["variant"]["provenance"]["quality_reference"]
        assert ref["model"] == "source" and ref["file_type"] == "Q4_K_M"
        assert ref["note"] == "requantized from Q4_K_M; the reference (Q4_K_M) is not the original weights"
    assert kld["Q2_K"]["kld_mean"] - kld["Q8_0"]["kld_mean"] > kld["Q2_K"]["kld_mean_u95"] + kld["Q8_0"]["kld_mean_u95"]
    assert kld["Q2_K"]["same_top_p"] < kld["Q8_0"]["same_top_p"]
    proc = subprocess.run([str(Path(sys.executable).parent / "melt"), "compare", good.run_id, bad.run_id, "--json",
                           "--results", str(results)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    cells = {c["model"]: c for c in json.loads(proc.stdout)["cells"]}
    verdicts = {m["metric"]: m["verdict"] for m in cells["variant"]["metrics"]}
    assert verdicts["kld_mean"] == "regression" and verdicts["same_top_p"] == "regression", verdicts
    assert not cells["source"]["regressed"]  # the unchanged source is not blamed


def test_an_experiment_whose_reference_is_no_model_is_refused_when_loaded(tmp_path, gemma_model):
    from melt.config.loader import load_experiment

    exp = tmp_path / "e.yaml"
    exp.write_text(f"""
name: q
devices: [local]
models: [{{name: gemma, path: {gemma_model}}}]
workloads: [{{name: q, kind: quality, reference: gemma-source}}]
""")
    with pytest.raises(ConfigError, match="reference 'gemma-source' is neither 'host' nor a model"):
        load_experiment(exp)


def test_a_reference_with_another_tokenizer_gives_perplexity_only_and_says_why(tmp_path, gemma_model):
    from melt.frameworks.llamacpp.quality import other_tokenizer
    from melt.models.tiny import write_tiny_model

    tiny = write_tiny_model(tmp_path / "tiny.gguf", seed=0)
    why = other_tokenizer(tiny, gemma_model)
    assert why and why.startswith("KL divergence not measured") and "gemma3" in why
    inputs = LlamaCpp().job_inputs("quality", {"ctx": 256, "chunks": 2, "reference": "gemma"}, model_file=tiny,
                                   model_files={"gemma": gemma_model, "tiny": tiny}, base_dir=tmp_path)
    assert set(inputs) == {"text"}  # scored on the text: no base logits computed or pushed
    assert other_tokenizer(gemma_model, gemma_model) is None

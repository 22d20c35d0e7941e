"""llama-perplexity's output: the final estimate, the KL-divergence blocks, odd forms."""

from __future__ import annotations

import pytest

from melt.parsers import detect_kind, parse
from melt.parsers.perplexity import Z95, parse_perplexity
from tests.parsers.conftest import read


def test_a_plain_run_gives_perplexity_its_u95_and_the_scored_tokens() -> None:
    m = parse_perplexity(read("perplexity_gemma3_270m_plain.txt"))
    assert m == pytest.approx({"perplexity": 2.1543, "perplexity_u95": Z95 * 0.13603,
                               # 4 chunks of 256: the second half of each is scored
                               "scored_tokens": 512.0})


def test_the_final_estimate_is_found_behind_the_last_passes_eta() -> None:
    line = "0.04.727.328 I perplexity: 3.30 seconds per pass - ETA 0.04.987.872 I Final estimate: PPL = 9.5 +/- 0.25"
    assert parse_perplexity(line) == pytest.approx({"perplexity": 9.5, "perplexity_u95": Z95 * 0.25})


def test_a_published_run_reads_as_posted() -> None:
    m = parse_perplexity(read("perplexity_ik_llama_pr262_final.txt"))
    assert m == pytest.approx({"perplexity": 3.4184, "perplexity_u95": Z95 * 0.01902})
    assert "scored_tokens" not in m  # the post left out the chunks line: unknown, not guessed


def test_the_kl_divergence_blocks() -> None:
    m = parse_perplexity(read("perplexity_gemma3_270m_kld_self.txt"))
    assert m["perplexity"] == pytest.approx(2.154267) and m["perplexity_u95"] == pytest.approx(Z95 * 0.136029)
    assert m["reference_perplexity"] == pytest.approx(2.154268)
    assert m["ppl_ratio"] == pytest.approx(1.0) and m["ppl_ratio_u95"] == pytest.approx(Z95 * 0.000004)
    assert m["kld_mean"] == pytest.approx(0.000001) and m["kld_mean_u95"] == pytest.approx(Z95 * 0.000001)
    assert m["kld_p99"] == pytest.approx(0.000035) and m["kld_max"] == pytest.approx(0.000052)
    assert m["kld_median"] == pytest.approx(0.0)
    assert m["same_top_p"] == pytest.approx(100.0) and m["same_top_p_u95"] == pytest.approx(0.0)
    assert m["delta_p_rms"] == pytest.approx(0.001)
    assert m["scored_tokens"] == 512.0  # from "kl_divergence: computing over 4 chunks, n_ctx=256"


def test_a_published_kld_block_whose_signs_were_lost_on_the_way() -> None:
    m = parse_perplexity(read("perplexity_llamacpp_pr12557_kld_lost_encoding.txt"))
    assert m == pytest.approx({
        "perplexity": 10.910139, "perplexity_u95": Z95 * 0.080259,
        "reference_perplexity": 10.517647, "reference_perplexity_u95": Z95 * 0.077374,
        "ppl_ratio": 1.037318, "ppl_ratio_u95": Z95 * 0.000965,
        "kld_mean": 0.042532, "kld_mean_u95": Z95 * 0.000364,
        "kld_max": 10.214425, "kld_p99": 0.324855, "kld_median": 0.023195,
        "delta_p_rms": 5.843, "delta_p_rms_u95": Z95 * 0.054,
        "same_top_p": 89.938, "same_top_p_u95": Z95 * 0.078,
    })


def test_a_published_perplexity_block_without_its_kld_part() -> None:
    m = parse_perplexity(read("perplexity_llamacpp_pr19661_ppl_stats.txt"))
    assert m["perplexity"] == pytest.approx(15.919427) and m["ppl_ratio"] == pytest.approx(1.178739)
    assert not any(k.startswith(("kld", "same_top")) for k in m)  # not in the text: absent


@pytest.mark.parametrize("text", [
    "", "[1]2.5576,[2]2.2232,", "Final estimate: PPL = nan +/- nan",
    "perplexity: calculating perplexity over 4 chunks, n_ctx=256, batch_size=2048, n_seq=8\n",
    "main: build = 1 (x)\nllama_model_loader: loaded meta data\n",
])
def test_no_estimate_is_nothing_and_never_a_zero(text: str) -> None:
    assert parse_perplexity(text) == {}


def test_melt_parse_detects_both_modes() -> None:
    for name in ("perplexity_gemma3_270m_plain.txt", "perplexity_gemma3_270m_kld_self.txt",
                 "perplexity_llamacpp_pr12557_kld_lost_encoding.txt"):
        assert detect_kind(read(name)) == "llama-perplexity", name
    kind, records = parse(read("perplexity_gemma3_270m_plain.txt"))
    assert kind == "llama-perplexity" and records[0]["perplexity"] == pytest.approx(2.1543)

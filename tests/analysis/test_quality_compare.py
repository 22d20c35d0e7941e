"""Quality figures in `melt compare`: their direction, and the ± rule for single evaluations."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

from datetime import datetime, timezone

import pytest

from melt.analysis import synthetic as syn
from melt.analysis.history import compare_history, compare_runs
from melt.analysis.metrics import HIGHER_IS_BETTER, LOWER_IS_BETTER, MetricRule, direction
from melt.analysis.regress import IMPROVEMENT, INCONCLUSIVE, REGRESSION, UNCHANGED, judge
from melt.errors import ResultsError

MELT = str(Path(sys.executable).parent / "melt")


def quality_cell(**changes) -> syn.Cell:
    base = syn.Cell(device="pixel-8", model="gemma-3-270m", quantization="Q4_K_M", workload="quality",
                    kind="quality", params={"quality_reference": "host", "n_ctx": 128, "chunks": 4})
    return syn.renamed(base, **changes)


def two_runs(store, before: syn.Cell, after: syn.Cell, noise: float = 0.0):
    assert before.cell_id == after.cell_id  # the same cell, different figures
    a = syn.make_run(store, [before], repetitions=1, noise=noise, seed=1)
    b = syn.make_run(store, [after], repetitions=1, noise=noise, seed=2)
    return a, b


def verdict(store, a, b, metric):
    result = compare_runs(store, a.run_id, b.run_id, metrics=[metric])
    (cell,) = result.cells
    (m,) = cell.metrics
    return m


@pytest.mark.parametrize("metric", ["perplexity", "kld_mean", "kld_median", "kld_p99", "delta_p_rms",
                                    "ppl_ratio"])
def test_higher_loss_figures_are_worse(metric):
    assert direction(metric) == LOWER_IS_BETTER


def test_same_top_p_higher_is_better_and_half_widths_have_no_direction():
    assert direction("same_top_p") == HIGHER_IS_BETTER
    assert direction("kld_mean_u95") == 0 and direction("scored_tokens") == 0


def test_u95_rule_is_the_combined_half_width():
    rule = MetricRule("kld_mean", LOWER_IS_BETTER, 0.05)
    # 0.10 -> 0.13: difference 0.03; combined half-width sqrt(0.02^2 + 0.02^2) = 0.0283
    assert judge([0.10], [0.13], rule, baseline_u95=[0.02], current_u95=[0.02]).verdict == REGRESSION
    # each ± of 0.022 gives 0.0311 combined: the same jump is within noise
    m = judge([0.10], [0.13], rule, baseline_u95=[0.022], current_u95=[0.022])
    assert m.verdict == INCONCLUSIVE and m.test == "u95" and m.p_value is None
    assert math.hypot(0.022, 0.022) > 0.03 > math.hypot(0.02, 0.02)


def test_a_kld_jump_against_host_is_a_regression_and_exits_2(store):
    a, b = two_runs(store, quality_cell(kld_mean=0.02), quality_cell(kld_mean=0.60, same_top_p=70.0,
                                                                        perplexity=30.0))
    proc = subprocess.run([MELT, "compare", a.run_id, b.run_id, "--json", "--results", str(store.root)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    data = json.loads(proc.stdout)
    (cell,) = data["cells"]
    assert cell["regressed"] and json.loads(cell["params"])["quality_reference"] == "host"
    by_name = {m["metric"]: m for m in cell["metrics"]}
    for name in ("kld_mean", "perplexity", "same_top_p", "ppl_ratio"):
        assert by_name[name]["verdict"] == REGRESSION, by_name[name]
        assert by_name[name]["test"] == "u95"
    assert by_name["same_top_p"]["change"] < 0  # lower agreement is the bad way


def test_a_better_variant_is_an_improvement(store):
    a, b = two_runs(store, quality_cell(kld_mean=0.30, same_top_p=80.0), quality_cell(kld_mean=0.05,
                                                                                      same_top_p=94.0))
    assert verdict(store, a, b, "kld_mean").verdict == IMPROVEMENT
    assert verdict(store, a, b, "same_top_p").verdict == IMPROVEMENT


def test_a_change_within_the_half_widths_is_not_a_regression(store):
    # kld 0.020 -> 0.021 (+5 %, ± 6 % each side), perplexity 18.0 -> 18.3 (+1.7 %, ± 3 % each)
    a, b = two_runs(store, quality_cell(kld_mean=0.020), quality_cell(kld_mean=0.0212, perplexity=18.3))
    k = verdict(store, a, b, "kld_mean")
    assert k.verdict in (UNCHANGED, INCONCLUSIVE) and k.verdict != REGRESSION
    assert "within" in k.note
    assert verdict(store, a, b, "perplexity").verdict == UNCHANGED
    proc = subprocess.run([MELT, "compare", a.run_id, b.run_id, "--results", str(store.root)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_same_top_p_falling_is_a_regression_rising_is_not(store):
    a, b = two_runs(store, quality_cell(same_top_p=95.0), quality_cell(same_top_p=85.0))
    assert verdict(store, a, b, "same_top_p").verdict == REGRESSION
    c, d = two_runs(store, quality_cell(same_top_p=85.0), quality_cell(same_top_p=95.0))
    assert verdict(store, c, d, "same_top_p").verdict == IMPROVEMENT


def test_another_reference_is_another_cell(store):
    host = quality_cell(kld_mean=0.02)
    other = quality_cell(kld_mean=0.60, params={"quality_reference": "gemma-3-270m-f16", "n_ctx": 128,
                                                "chunks": 4})
    assert host.cell_id != other.cell_id
    a = syn.make_run(store, [host], repetitions=1, seed=1)
    b = syn.make_run(store, [other], repetitions=1, seed=2)
    with pytest.raises(ResultsError, match="no job definition"):
        compare_runs(store, a.run_id, b.run_id)


def test_history_mode_uses_the_half_widths_too(store):
    runs = [syn.make_run(store, [quality_cell(kld_mean=0.02)], repetitions=1, seed=s,
                         created_at=datetime(2026, 1, 1 + s, tzinfo=timezone.utc)) for s in range(3)]
    current = syn.make_run(store, [quality_cell(kld_mean=0.5)], repetitions=1, seed=9,
                           created_at=datetime(2026, 1, 9, tzinfo=timezone.utc))
    result = compare_history(store, current.run_id, 3, metrics=["kld_mean"])
    (cell,) = result.cells
    (m,) = cell.metrics
    assert m.verdict == REGRESSION and m.test == "u95" and m.baseline_n == len(runs)


def test_a_file_swapped_under_the_same_name_meets_its_baseline(store):
    good = quality_cell(kld_mean=0.02)
    swapped = quality_cell(quantization="Q2_K", kld_mean=0.4, same_top_p=75.0)
    assert good.cell_id != swapped.cell_id  # another file: another cell for speed
    a = syn.make_run(store, [good, syn.Cell(device="pixel-8")], repetitions=1, seed=1)
    b = syn.make_run(store, [swapped, syn.Cell(device="pixel-8")], repetitions=1, seed=2)
    result = compare_runs(store, a.run_id, b.run_id, metrics=["kld_mean", "decode_tps"])
    quality = [c for c in result.cells if c.identity["kind"] == "quality"]
    assert len(quality) == 1 and quality[0].status == "compared" and quality[0].cell_id.startswith("q")
    assert [m.verdict for m in quality[0].metrics] == [REGRESSION]
    bench = [c for c in result.cells if c.identity["kind"] == "bench"]
    assert [c.cell_id for c in bench] == [syn.Cell(device="pixel-8").cell_id]  # speed cells keep theirs

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from melt.analysis.metrics import MetricRule
from melt.analysis.regress import compare_frames, judge, min_mannwhitney_p
from melt.analysis.steps import detect_steps

TPS = MetricRule("decode_tps", 1, 0.05)
MS = MetricRule("ttft_ms", -1, 0.05)


def test_no_step_in_noise():
    rng = np.random.default_rng(3)
    assert detect_steps(100 + rng.normal(0, 1, 40)) == []


def test_one_step_found_where_it_is():
    rng = np.random.default_rng(4)
    v = np.r_[100 + rng.normal(0, 1, 20), 90 + rng.normal(0, 1, 15)]
    (step,) = detect_steps(v)
    assert step.index == 20 and step.change == pytest.approx(-0.10, abs=0.02)


def test_two_steps_and_floor():
    rng = np.random.default_rng(5)
    v = np.r_[100 + rng.normal(0, .5, 10), 120 + rng.normal(0, .5, 10), 100 + rng.normal(0, .5, 10)]
    assert [s.index for s in detect_steps(v)] == [10, 20]
    small = np.r_[np.full(10, 100.0), np.full(10, 102.0)]
    assert detect_steps(small) == []  # 2 % < 5 % floor
    assert [s.index for s in detect_steps(small, floor=0.01)] == [10]
    with pytest.raises(ValueError, match="values contain NaN"):
        detect_steps([1.0, float("nan")])


def test_judge_needs_significance_and_effect():
    rng = np.random.default_rng(6)
    base = 20 * (1 + rng.normal(0, .01, 5))
    assert judge(base, base * 0.9, TPS).verdict == "regression"
    assert judge(base, base * 1.1, TPS).verdict == "improvement"
    assert judge(base, base * 0.98, TPS).verdict == "unchanged"  # significant but under the floor
    noisy = 20 * (1 + rng.normal(0, .2, 5))
    v = judge(base, noisy * 0.94, TPS)
    assert v.verdict in ("inconclusive", "unchanged", "improvement")
    # lower is better for ms: 10 % more is worse
    assert judge([100, 101, 99, 100, 100.5], [110, 111, 109, 110, 110.5], MS).verdict == "regression"
    assert judge([100, 101, 99, 100, 100.5], [90, 91, 89, 90, 90.5], MS).verdict == "improvement"


def test_judge_too_few_repetitions_is_inconclusive():
    assert min_mannwhitney_p(2, 2) > 0.05
    v = judge([20, 20.1], [18, 18.1], TPS)
    assert v.verdict == "inconclusive" and "too few" in v.note
    assert judge([], [1.0], TPS).verdict == "missing"
    w = judge([20.0, 20.0, 20.0], [18.0, 18.0, 18.0], TPS, test="welch")
    assert w.verdict == "regression" and w.p_value == 0.0


def _frame(cell, values, status="ok"):
    return pd.DataFrame([{"cell_id": cell, "status": status, "device": "d", "decode_tps": v,
                          "run_id": "r", "job_id": f"{cell}{i}"} for i, v in enumerate(values)])


def test_compare_frames_cells_on_one_side_only():
    base = pd.concat([_frame("a", [20, 20.1, 19.9, 20, 20.2]), _frame("b", [5, 5, 5, 5, 5])])
    cur = pd.concat([_frame("a", [18, 18.1, 17.9, 18, 18.2]), _frame("c", [1, 1, 1, 1, 1])])
    result = compare_frames(base, cur, metrics=["decode_tps"])
    status = {c.cell_id: c.status for c in result.cells}
    assert status == {"a": "compared", "c": "no-baseline", "b": "no-current"}
    assert [c.cell_id for c, _ in result.regressions] == ["a"]
    d = result.as_dict()
    assert d["regressed"] and d["regressions"] == 1
    only_current = compare_frames(base, cur, metrics=["decode_tps"], current_cells_only=True)
    assert [c.cell_id for c in only_current.cells] == ["a", "c"]
    with pytest.raises(ValueError, match="unknown test 'median'"):
        compare_frames(base, cur, test="median")

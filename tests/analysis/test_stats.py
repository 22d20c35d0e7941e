from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from melt.analysis import synthetic as syn
from melt.analysis.frames import load_results
from melt.analysis.metrics import direction, rules
from melt.analysis.stats import bootstrap_median_ci, cell_stats, stability_flags, summarize, summary_table


def test_directions_live_in_one_table():
    assert direction("decode_tps") == 1 and direction("prefill_tps") == 1
    assert direction("ttft_ms") == -1 and direction("energy_per_token_decode_j") == -1
    assert direction("energy_per_token_decode_j_net") == -1
    assert direction("peak_rss_bytes") == -1 and direction("temp_max_c") == -1
    assert direction("decode_tps_stddev") == 0 and direction("gen_tokens") == 0
    assert [r.name for r in rules(["decode_tps", "gen_tokens"], {"decode_tps": 0.03})] == ["decode_tps"]
    assert rules(["decode_tps"], {"decode_tps": 0.03})[0].floor == 0.03


def test_bootstrap_ci_brackets_the_median_and_narrows_with_n():
    rng = np.random.default_rng(1)
    small = rng.normal(100, 5, 5)
    large = rng.normal(100, 5, 200)
    s, l = summarize(small), summarize(large)
    assert s.ci_low <= s.median <= s.ci_high
    assert l.ci_low <= l.median <= l.ci_high
    assert (l.ci_high - l.ci_low) < (s.ci_high - s.ci_low)
    assert 97 < l.median < 103
    lo, hi = bootstrap_median_ci(np.array([[1.0], [2.0]]))
    assert list(lo) == [1.0, 2.0] and list(hi) == [1.0, 2.0]


def test_stability_flags():
    assert stability_flags([10, 10.1, 9.9]) == ()
    assert "cv>10%" in stability_flags([10, 14, 7])
    assert any(f.startswith("max/min>") for f in stability_flags([10, 10, 10, 13]))
    assert stability_flags([5.0]) == ("n=1",)
    assert summarize([10, 14, 7]).unstable
    with pytest.raises(ValueError, match="empty sample"):
        summarize([])


def test_cell_stats_on_a_synthetic_run(store, cells):
    run = syn.make_run(store, cells, repetitions=4, noise=0.01, failed={cells[1].cell_id: "out of memory"})
    jobs = load_results([run.run_id], store.root, traces=False)["jobs"]
    stats = cell_stats(jobs, ["decode_tps", "prefill_tps"])
    assert set(stats["metric"]) == {"decode_tps", "prefill_tps"}
    assert cells[1].cell_id not in set(stats["cell_id"])  # failed jobs carry no numbers
    row = stats[(stats["cell_id"] == cells[0].cell_id) & (stats["metric"] == "decode_tps")].iloc[0]
    values = jobs[(jobs["cell_id"] == cells[0].cell_id)]["decode_tps"]
    assert row["n"] == 4 and row["median"] == pytest.approx(values.median())
    assert row["ci_low"] <= row["median"] <= row["ci_high"]
    assert row["quantization"] == cells[0].quantization
    assert len(row["job_ids"].split()) == 4 and row["run_ids"] == run.run_id
    wide = summary_table(stats, ["decode_tps", "prefill_tps"])
    assert len(wide) == len(cells) - 1
    assert {"decode_tps", "decode_tps_ci_low", "decode_tps_ci_high", "decode_tps_flags"} <= set(wide.columns)


def test_cell_stats_empty_inputs():
    assert cell_stats(pd.DataFrame()).empty
    failed = pd.DataFrame([{"cell_id": "a", "status": "failed", "run_id": "r", "job_id": "j"}])
    assert cell_stats(failed).empty


def test_load_results_has_jobs_metrics_traces(store, cells):
    run = syn.make_run(store, cells[:2], repetitions=2, trace_samples=300)
    out = load_results([run.run_id], store.root)
    assert set(out) == {"jobs", "metrics", "traces"}
    assert len(out["jobs"]) == 4 and out["jobs"]["simulated"].all()
    assert len(out["traces"]) == 4 * 300
    assert {"run_id", "job_id", "t_s", "power_w", "temp_cpu_c", "rss_bytes"} <= set(out["traces"].columns)
    assert set(out["metrics"]["metric"]) >= {"decode_tps", "energy_per_token_decode_j"}
    record = run.jobs()[0]
    assert record["simulated"] is True and "synthetic" in record["provenance"]["synthetic"]

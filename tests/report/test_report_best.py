"""The report's lead: the best cell per criterion with its interval, the cells not told apart, the fronts."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from melt.analysis import synthetic as syn
from melt.report import build_report
from melt.report.best import best_per_criterion, interval
from melt.store.runs import ResultsStore


def row(name: str, tps: float, lo: float, hi: float, **more) -> dict:
    return {"run_id": "r1", "cell_id": name, "run_label": "", "device": "pixel-8", "framework": "llama.cpp",
            "model": name, "quantization": "", "workload_short": "bench", "labels": "simulated",
            "decode_tps": tps, "decode_tps_ci_low": lo, "decode_tps_ci_high": hi, **more}


def test_the_best_is_named_with_the_cells_it_is_not_told_apart_from():
    table = pd.DataFrame([row("slow", 10.0, 9.5, 10.5), row("fast", 20.0, 19.0, 21.0),
                          row("near", 19.5, 18.8, 20.2), row("apart", 17.0, 16.5, 18.5)])
    (fastest,) = best_per_criterion(table)
    assert fastest["criterion"] == "Fastest" and fastest["metric"] == "decode tok/s"
    assert fastest["best"]["name"] == "pixel-8 · llama.cpp · fast · bench"
    assert fastest["best"]["value"] == "20.0" and fastest["best"]["interval"] == "19.0 – 21.0"
    assert fastest["best"]["labels"] == ("simulated",)
    assert [c["name"].split(" · ")[2] for c in fastest["close"]] == ["near"]  # 18.5 < 19.0: apart


def test_lower_is_better_for_energy_and_the_sensor_interval_counts():
    j = "energy_per_token_decode_j"
    table = pd.DataFrame([
        {**row("a", 10, 9, 11), j: 0.050, f"{j}_ci_low": 0.049, f"{j}_ci_high": 0.051, f"{j}_u95": 0.004},
        {**row("b", 12, 11, 13), j: 0.056, f"{j}_ci_low": 0.055, f"{j}_ci_high": 0.057},
        {**row("c", 8, 7, 9), j: 0.040, f"{j}_ci_low": 0.039, f"{j}_ci_high": 0.041, f"{j}_u95": 0.001},
    ])
    fastest, frugal = best_per_criterion(table)
    assert fastest["best"]["name"].endswith("b · bench")
    assert frugal["criterion"] == "Least energy per token" and frugal["best"]["name"].endswith("c · bench")
    assert "sensor's ± 0.001" in frugal["best"]["interval"]
    assert interval(table.iloc[0], j) == pytest.approx((0.046, 0.054))  # the sensor reaches further
    assert frugal["close"] == []  # a reaches down to 0.046, c up to 0.041
    table.loc[0, f"{j}_u95"] = 0.012
    assert [c["name"][-9:] for c in best_per_criterion(table)[1]["close"]] == ["a · bench"]


def test_no_criterion_without_its_metric():
    assert best_per_criterion(pd.DataFrame([{"run_id": "r", "cell_id": "c", "decode_tps": float("nan")}])) == []


def test_no_best_quality_from_a_host_reference_or_the_reference_itself():
    def q(model: str, ref: str, kld: float) -> dict:
        return {**row(model, float("nan"), float("nan"), float("nan")), "kind": "quality",
                "params": {"reference": ref}, "kld_mean": kld, "kld_mean_ci_low": kld, "kld_mean_ci_high": kld}
    table = pd.DataFrame([q("src", "host", 0.0), q("a", "host", 0.0), q("src", "src", 0.0),
                          q("a", "src", 0.03), q("b", "src", 0.01), q("c", "other", 0.2)])
    quality = [r for r in best_per_criterion(table) if r["criterion"] == "Best quality"]
    assert [(r["metric"], r["best"]["name"].split(" · ")[2]) for r in quality] == [
        ("KLD mean from src", "b"), ("KLD mean from other", "c")]


def test_perplexity_alone_never_picks_a_best_quality():
    # a SmolLM2 and a Gemma scored on one text without a reference: their perplexities come from
    # two tokenizers, and a lower one says nothing about which model is better
    def ppl(model: str, value: float, ref=None) -> dict:
        return {**row(model, float("nan"), float("nan"), float("nan")), "kind": "quality",
                "params": {"reference": ref} if ref else {}, "perplexity": value,
                "perplexity_ci_low": value, "perplexity_ci_high": value}
    table = pd.DataFrame([ppl("gemma", 2.2), ppl("smollm2", 3.7), ppl("smollm2", 3.7, ref="gemma")])
    assert [r for r in best_per_criterion(table) if r["criterion"] == "Best quality"] == []


#: (model, quantization, decode tok/s, W while decoding, KLD against the Q4_K_M source)
LADDER = (("gemma3-270m-q8_0", "Q8_0", 30.0, 4.2, 0.004), ("gemma3-270m-q4_k_m", "Q4_K_M", 42.0, 4.0, 0.0),
          ("gemma3-270m-q2_k", "Q2_K", 45.0, 3.0, 0.40))


def test_the_report_leads_with_the_best_per_criterion(tmp_path):
    cells = []
    for model, quant, tps, power, kld in LADDER:
        bench = syn.Cell(device="virtual-phone", model=model, quantization=quant, decode_tps=tps,
                         power_w=power)
        cells += [bench,
                  syn.renamed(bench, workload="vs-source", kind="quality", kld_mean=kld,
                              params={"reference": "gemma3-270m-q4_k_m", "ctx": 128, "chunks": 4}),
                  syn.renamed(bench, workload="vs-host", kind="quality", kld_mean=0.0,
                              params={"reference": "host", "ctx": 128, "chunks": 4})]
    run = syn.make_run(ResultsStore(tmp_path / "results"), cells, repetitions=3, noise=0.002, seed=5)
    html = build_report([run], tmp_path / "r.html").path.read_text(encoding="utf-8")
    assert html.index('id="best"') < html.index('id="summary"')
    body = re.search(r'<table id="best-table">.*?</table>', html, re.S).group(0)
    rows = [(m.group(1), m.group(2)) for m in re.finditer(r'<tr data-criterion="([^"]+)">(.*?)</tr>', body, re.S)]
    by = dict(rows)
    assert [c for c, _ in rows] == ["Fastest", "Least energy per token", "Best quality", "Pareto set", "Pareto set"]
    assert "gemma3-270m-q2_k Q2_K · bench" in by["Fastest"]  # 45 tok/s
    assert "gemma3-270m-q2_k Q2_K · bench" in by["Least energy per token"]  # 3 W / 45 tok/s
    # against the source, not against the same file on the host (0 for every variant)
    assert "KLD mean from gemma3-270m-q4_k_m" in by["Best quality"]
    assert "gemma3-270m-q8_0 Q8_0 · vs-source" in by["Best quality"]  # KLD 0.004
    assert "evaluation&#39;s ±" in by["Best quality"] and "vs-host" not in by["Best quality"]
    assert all('<span class="sim">simulated</span>' in r for c, r in rows if c != "Pareto set")
    # the source itself (KLD 0) is faster than Q8_0: Q8_0 is off both fronts
    front = [r for c, r in rows if c == "Pareto set"]
    assert all("gemma3-270m-q2_k Q2_K" in r and "gemma3-270m-q4_k_m Q4_K_M" in r and "q8_0" not in r
               for r in front)
    assert all("from gemma3-270m-q4_k_m on virtual-phone" in r for r in front)

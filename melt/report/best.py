"""Which configuration is best: the report's lead, one row per criterion.

Read from the summary table (one row per cell: medians, 95 % bootstrap
intervals and, for energies and quality, the measurement's own ``_u95``) and
from the trade-off charts' Pareto fronts. A winner whose interval overlaps
another cell's is not told apart from it: those cells are named beside it.
"""

from __future__ import annotations

from typing import Any, Sequence

import pandas as pd

from melt.analysis.metrics import QUALITY_METRICS, direction, format_value, label
from melt.labels import parse_labels
from melt.report.tradeoff import HOST_REFERENCE, quality_reference

#: (criterion, metric): judged over every cell that has the metric
CRITERIA = (
    ("Fastest", "decode_tps"),
    ("Least energy per token", "energy_per_token_decode_j"),
)

#: At most this many cells are named as not told apart from a winner.
MAX_CLOSE = 4


def configuration(row: pd.Series | dict[str, Any]) -> str:
    """``pixel-8 · llama.cpp · gemma-3-270m Q4_K_M · bench (n_gen=32)``, with the run when several."""
    parts = [row.get("run_label"), row.get("device"), row.get("framework"),
             " ".join(str(p) for p in (row.get("model"), row.get("quantization")) if p and p == p),
             row.get("workload_short") or row.get("workload")]
    return " · ".join(str(p) for p in parts if p is not None and p == p and str(p))


def interval(row: pd.Series | dict[str, Any], metric: str) -> tuple[float, float]:
    """The 95 % interval of a cell's median, widened to the measurement's own ± where it has one."""
    med = float(row[metric])
    lo, hi = row.get(f"{metric}_ci_low"), row.get(f"{metric}_ci_high")
    lo = med if lo is None or lo != lo else float(lo)
    hi = med if hi is None or hi != hi else float(hi)
    u = row.get(f"{metric}_u95")
    if u is not None and u == u:
        lo, hi = min(lo, med - float(u)), max(hi, med + float(u))
    return lo, hi


def _interval_text(row: pd.Series, metric: str) -> str:
    lo, hi = interval(row, metric)
    own = row.get(f"{metric}_u95")
    out = f"{format_value(metric, lo)} – {format_value(metric, hi)}"
    if own is not None and own == own:
        kind = "evaluation" if metric in QUALITY_METRICS else "sensor"
        out += f" (with the {kind}'s ± {format_value(metric, float(own))})"
    return out


def _entry(row: pd.Series, metric: str) -> dict[str, Any]:
    return {"name": configuration(row), "labels": parse_labels(row.get("labels")),
            "anchor": f"cell-{row['run_id']}-{row['cell_id']}",
            "value": format_value(metric, float(row[metric])), "interval": _interval_text(row, metric)}


def _judge(criterion: str, metric_label: str, table: pd.DataFrame, metric: str) -> dict[str, Any] | None:
    if metric not in table.columns or table[metric].isna().all():
        return None
    have = table.dropna(subset=[metric])
    ordered = have.iloc[(have[metric].astype(float).to_numpy() * -direction(metric)).argsort(kind="stable")]
    best = ordered.iloc[0]
    lo, hi = interval(best, metric)
    close = []
    for _, r in ordered.iloc[1:].iterrows():
        lo2, hi2 = interval(r, metric)
        if lo2 <= hi and lo <= hi2:
            close.append(r)
    return {"criterion": criterion, "metric": metric_label, "best": _entry(best, metric),
            "close": [_entry(r, metric) for r in close[:MAX_CLOSE]], "more": max(0, len(close) - MAX_CLOSE)}


def _quality_groups(table: pd.DataFrame) -> list[tuple[str | None, pd.DataFrame]]:
    """Quality cells by the reference they were measured against, which is what makes them
    comparable. Left out: ``host`` references (the same file on this machine's build checks
    the device's build, not a variant's loss) and a reference measured against itself."""
    cells = table[table["kind"] == "quality"] if "kind" in table.columns else table
    groups: dict[str | None, list[Any]] = {}
    for idx, r in cells.iterrows():
        ref = quality_reference(r)
        if ref == HOST_REFERENCE or (ref is not None and ref == str(r.get("model"))):
            continue
        groups.setdefault(ref, []).append(idx)
    return [(ref, cells.loc[idx]) for ref, idx in groups.items()]


def best_per_criterion(table: pd.DataFrame, tradeoffs: Sequence[dict[str, Any]] = ()
                       ) -> list[dict[str, Any]]:
    """One row per criterion some cell can answer, then one per Pareto front.

    *Best quality* is judged per reference (one row for each model the
    quality cells were measured against; see :func:`_quality_groups`), by
    KLD mean. Perplexity alone never picks a best: across tokenizers it is
    not comparable, and a cell does not say which tokenizer it used.

    Each row: ``criterion``, ``metric`` (its label), ``best`` (``name``,
    ``labels``, ``anchor``, ``value``, ``interval``) and ``close``: the cells
    whose interval overlaps the best one's (at most :data:`MAX_CLOSE`,
    nearest first), with ``more`` counting the rest. A front row has
    ``front`` (the variants on it) instead of ``best``. ``tradeoffs`` are the
    charts of :func:`melt.report.tradeoff.tradeoff_views`.
    """
    rows = [_judge(criterion, label(metric), table, metric) for criterion, metric in CRITERIA]
    for ref, cells in _quality_groups(table):
        # by KLD only: it exists only between one vocabulary's distributions, whereas perplexities
        # of models with different tokenizers are not comparable and nothing here tells them apart
        if ref is not None and "kld_mean" in cells.columns and cells["kld_mean"].notna().any():
            rows.append(_judge("Best quality", label("kld_mean") + f" from {ref}", cells, "kld_mean"))
    rows = [r for r in rows if r is not None]
    for chart in tradeoffs:
        rows.append({"criterion": "Pareto set", "metric": chart["title"], "front": list(chart["front"]),
                     "close": [], "more": 0})
    return rows

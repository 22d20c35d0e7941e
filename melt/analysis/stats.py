"""Statistics per cell: median, bootstrap confidence interval, spread, stability.

A *cell* is one job definition (``cell_id``): its repetitions are the sample.
Everything here is a pure function of DataFrames or sequences.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from melt.analysis.frames import JOB_COLUMNS

#: Coefficient of variation above which a cell is flagged unstable (pyperf warns at 10 %).
CV_LIMIT = 0.10
#: max/min ratio above which a cell is flagged unstable.
SPREAD_LIMIT = 1.2

#: Identity columns carried from the jobs frame into each cell row.
CELL_COLUMNS = ["cell_id", "device", "framework", "model", "quantization", "workload", "kind",
                "params", "simulated", "emulated", "stand_in", "labels"]


@dataclass(frozen=True)
class Summary:
    """Summary of one sample (one cell, one metric); values in the metric's unit."""

    n: int
    median: float
    mean: float
    ci_low: float
    ci_high: float
    cv: float
    max_min: float
    flags: tuple[str, ...]

    @property
    def unstable(self) -> bool:
        return bool(self.flags)


def bootstrap_median_ci(samples: np.ndarray, *, n_boot: int = 1000, confidence: float = 0.95,
                        seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Percentile-bootstrap interval of the median, for many samples of equal size at once.

    ``samples`` has shape ``(groups, n)``; returns ``(low, high)`` of shape ``(groups,)``.
    With one observation the interval is that observation.
    """
    samples = np.asarray(samples, dtype=float)
    if samples.ndim == 1:
        samples = samples[None, :]
    g, n = samples.shape
    if n <= 1:
        return samples[:, 0].copy(), samples[:, 0].copy()
    rng = np.random.default_rng(seed)
    lo_q, hi_q = (1 - confidence) / 2 * 100, (1 + confidence) / 2 * 100
    low, high = np.empty(g), np.empty(g)
    chunk = max(1, int(4_000_000 // (n_boot * n)))  # bound memory to ~32 MB
    idx = rng.integers(0, n, size=(n_boot, n))
    for start in range(0, g, chunk):
        part = samples[start:start + chunk]
        medians = np.median(part[:, idx], axis=2)  # (chunk, n_boot)
        low[start:start + chunk] = np.percentile(medians, lo_q, axis=1)
        high[start:start + chunk] = np.percentile(medians, hi_q, axis=1)
    return low, high


def stability_flags(values: Sequence[float], *, cv_limit: float = CV_LIMIT,
                    spread_limit: float = SPREAD_LIMIT) -> tuple[str, ...]:
    """Why a sample looks unstable: ``cv>10%``, ``max/min>1.2``, ``n=1`` (empty when fine)."""
    v = np.asarray(values, dtype=float)
    flags = []
    if len(v) < 2:
        return ("n=1",) if len(v) == 1 else ("n=0",)
    cv, ratio = _cv(v), _max_min(v)
    if cv > cv_limit:
        flags.append(f"cv>{cv_limit:.0%}")
    if ratio > spread_limit:
        flags.append(f"max/min>{spread_limit:g}")
    return tuple(flags)


def _cv(v: np.ndarray) -> float:
    mean = float(np.mean(v))
    return float(np.std(v, ddof=1) / abs(mean)) if len(v) > 1 and mean != 0 else 0.0


def _max_min(v: np.ndarray) -> float:
    lo, hi = float(np.min(v)), float(np.max(v))
    if lo > 0:
        return hi / lo
    return 1.0 if lo == hi else float("inf")


def summarize(values: Sequence[float], *, n_boot: int = 1000, confidence: float = 0.95,
              seed: int = 0, cv_limit: float = CV_LIMIT, spread_limit: float = SPREAD_LIMIT) -> Summary:
    """Median, bootstrap CI of the median, CV, max/min and stability flags of one sample.

    Raises ``ValueError`` for an empty sample.
    """
    v = np.asarray([x for x in values if x == x], dtype=float)  # drop NaN
    if len(v) == 0:
        raise ValueError("empty sample")
    low, high = bootstrap_median_ci(v[None, :], n_boot=n_boot, confidence=confidence, seed=seed)
    return Summary(len(v), float(np.median(v)), float(np.mean(v)), float(low[0]), float(high[0]),
                   _cv(v), _max_min(v), stability_flags(v, cv_limit=cv_limit, spread_limit=spread_limit))


def metric_columns(jobs: pd.DataFrame) -> list[str]:
    """Numeric metric columns of a jobs frame (everything that is not an identity column)."""
    return [c for c in jobs.columns
            if c not in JOB_COLUMNS and pd.api.types.is_numeric_dtype(jobs[c])]


def cell_stats(jobs: pd.DataFrame, metrics: Sequence[str] | None = None, *, n_boot: int = 1000,
               confidence: float = 0.95, seed: int = 0, cv_limit: float = CV_LIMIT,
               spread_limit: float = SPREAD_LIMIT) -> pd.DataFrame:
    """One row per (cell, metric) over the ``ok`` jobs of ``jobs`` (a :func:`jobs_frame`).

    Columns: the cell identity (:data:`CELL_COLUMNS`), ``metric``, ``n``,
    ``median``, ``mean``, ``ci_low``, ``ci_high`` (bootstrap interval of the
    median at ``confidence``), ``cv`` (fraction), ``max_min``, ``flags``
    (``"; "``-joined), ``unstable``, ``run_ids`` and ``job_ids`` (the
    provenance of the number, ``" "``-joined). Values keep the metric's unit.
    """
    out_cols = CELL_COLUMNS + ["metric", "n", "median", "mean", "ci_low", "ci_high", "cv",
                               "max_min", "flags", "unstable", "run_ids", "job_ids"]
    if jobs.empty or "status" not in jobs.columns:
        return pd.DataFrame(columns=out_cols)
    ok = jobs[jobs["status"] == "ok"]
    names = [m for m in (metrics if metrics is not None else metric_columns(ok)) if m in ok.columns]
    if ok.empty or not names:
        return pd.DataFrame(columns=out_cols)
    ident = [c for c in CELL_COLUMNS if c in ok.columns]
    long = ok.melt(id_vars=ident + ["run_id", "job_id"], value_vars=names, var_name="metric",
                   value_name="value").dropna(subset=["value"])
    if long.empty:
        return pd.DataFrame(columns=out_cols)
    long["value"] = long["value"].astype(float)
    rows: list[dict] = []
    groups = list(long.groupby(["cell_id", "metric"], sort=True))
    by_n: dict[int, list[int]] = {}
    samples = []
    for i, ((cell, metric), g) in enumerate(groups):
        v = g["value"].to_numpy()
        samples.append(v)
        by_n.setdefault(len(v), []).append(i)
        first = g.iloc[0]
        row = {c: first[c] for c in ident}
        row.update(metric=metric, n=len(v), median=float(np.median(v)), mean=float(np.mean(v)),
                   cv=_cv(v), max_min=_max_min(v),
                   flags="; ".join(stability_flags(v, cv_limit=cv_limit, spread_limit=spread_limit)),
                   run_ids=" ".join(sorted(set(g["run_id"]))), job_ids=" ".join(g["job_id"]))
        rows.append(row)
    for n, members in by_n.items():
        low, high = bootstrap_median_ci(np.stack([samples[i] for i in members]), n_boot=n_boot,
                                        confidence=confidence, seed=seed)
        for k, i in enumerate(members):
            rows[i]["ci_low"], rows[i]["ci_high"] = float(low[k]), float(high[k])
    frame = pd.DataFrame(rows)
    frame["unstable"] = frame["flags"] != ""
    for c in out_cols:
        if c not in frame.columns:
            frame[c] = None
    return frame[out_cols]


def summary_table(stats: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """Wide form of :func:`cell_stats`: one row per cell, ``<metric>``, ``<metric>_ci_low``,
    ``<metric>_ci_high``, ``<metric>_flags`` columns for each of ``metrics``."""
    ident = [c for c in CELL_COLUMNS if c in stats.columns]
    if stats.empty:
        return pd.DataFrame(columns=ident + ["n"])
    base = stats.groupby("cell_id", sort=False).agg(
        {**{c: "first" for c in ident if c != "cell_id"}, "n": "max"}).reset_index()
    for m in metrics:
        part = stats[stats["metric"] == m].set_index("cell_id")
        for src, dst in (("median", m), ("ci_low", f"{m}_ci_low"), ("ci_high", f"{m}_ci_high"),
                         ("flags", f"{m}_flags")):
            base[dst] = base["cell_id"].map(part[src]) if not part.empty else None
    return base.sort_values([c for c in ("device", "framework", "model", "quantization", "workload",
                                          "params") if c in base.columns],
                            na_position="last", kind="stable").reset_index(drop=True)

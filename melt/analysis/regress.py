"""Regression verdicts: is the current run worse than its baseline, for sure and by enough?

A metric of a cell regressed when both hold:

- the change is statistically significant, one-sided in the "worse"
  direction: Mann-Whitney U on the repetitions when two runs are compared,
  Welch's t-test against the window of history runs otherwise;
- the relative change of the median is beyond the metric's floor
  (default 5 %), in the metric's bad direction (:mod:`melt.analysis.metrics`).

A figure that is one evaluation with its own 95 % half-width (a quality
job's ``perplexity`` and ``perplexity_u95``, ``kld_mean`` and
``kld_mean_u95``, ...) has no repetitions to test: its change is
significant when it exceeds the combined half-widths
``sqrt(u_baseline**2 + u_current**2)`` (test ``u95``), and the same floor
applies.

Pure functions over DataFrames and sequences; reading runs and the index is
the caller's business (:mod:`melt.analysis.history`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

from melt.analysis.metrics import (DEFAULT_COMPARED, DEFAULT_FLOOR, MetricRule, rules,
                                   uncertainty_column)
from melt.labels import parse_labels

#: Significance level of the one-sided tests.
ALPHA = 0.05

REGRESSION, IMPROVEMENT, UNCHANGED, INCONCLUSIVE, MISSING = (
    "regression", "improvement", "unchanged", "inconclusive", "missing")

TESTS = ("mannwhitney", "welch")
#: The test of a figure judged by its own half-width rather than by repetitions.
U95_TEST = "u95"


@dataclass(frozen=True)
class MetricVerdict:
    """One metric of one cell. ``change`` is (current - baseline) / baseline of the medians."""

    metric: str
    direction: int
    floor: float
    baseline_n: int
    baseline_median: float | None
    current_n: int
    current_median: float | None
    change: float | None
    p_value: float | None
    test: str
    verdict: str
    note: str = ""


@dataclass
class CellVerdict:
    """Every compared metric of one cell, with the cell's identity."""

    cell_id: str
    identity: dict[str, Any]
    status: str  # "compared", "no-baseline", "no-current", "incomparable"
    metrics: list[MetricVerdict] = field(default_factory=list)
    note: str = ""  # why a cell was not compared, or which baseline jobs were left out
    baseline_labels: tuple[str, ...] = ()  # every label among the baseline's jobs (melt.labels)
    current_labels: tuple[str, ...] = ()

    @property
    def labels_differ(self) -> bool:
        """Both sides have jobs and their labels differ (a simulated baseline against a measured run)."""
        return self.status == "compared" and self.baseline_labels != self.current_labels

    @property
    def labels_warning(self) -> str:
        """``baseline simulated, current measured: ...`` when :attr:`labels_differ`, else ""."""
        if not self.labels_differ:
            return ""
        return (f"baseline {labels_word(self.baseline_labels)}, current {labels_word(self.current_labels)}: "
                "these verdicts compare numbers of different kinds")

    @property
    def regressions(self) -> list[MetricVerdict]:
        return [m for m in self.metrics if m.verdict == REGRESSION]

    @property
    def label(self) -> str:
        i = self.identity
        from melt.analysis.history import params_text  # history builds on this module

        tags = self.current_labels or self.baseline_labels
        if self.labels_differ:  # both sides' labels: the cell mixes them
            tags = tuple(dict.fromkeys(self.baseline_labels + self.current_labels))
        device = i.get("device")
        if device and tags:
            device = f"{device} ({', '.join(tags)})"
        parts = [device, i.get("framework"), i.get("model"), i.get("quantization"), i.get("workload")]
        label = " / ".join(str(p) for p in parts if p) or self.cell_id
        params = params_text(i.get("params"))
        return f"{label} ({params})" if params else label


@dataclass
class Comparison:
    """The outcome of ``melt compare``: ``baseline`` and ``current`` describe the samples."""

    baseline: str
    current: str
    mode: str  # "runs" or "history"
    test: str
    alpha: float
    cells: list[CellVerdict]

    @property
    def regressions(self) -> list[tuple[CellVerdict, MetricVerdict]]:
        return [(c, m) for c in self.cells for m in c.regressions]

    @property
    def regressed(self) -> bool:
        return bool(self.regressions)

    @property
    def mixed(self) -> list[CellVerdict]:
        """Compared cells whose baseline and current jobs carry different labels."""
        return [c for c in self.cells if c.labels_differ]

    @property
    def warnings(self) -> list[str]:
        """One line per cell whose labels differ (empty when every comparison is like for like)."""
        return [f"warning: {c.label} [{c.cell_id}]: {c.labels_warning}" for c in self.mixed]

    def as_dict(self) -> dict[str, Any]:
        """The stable ``melt compare --json`` shape (fractions, not percentages)."""
        return {
            "baseline": self.baseline,
            "current": self.current,
            "mode": self.mode,
            "test": self.test,
            "alpha": self.alpha,
            "regressed": self.regressed,
            "regressions": len(self.regressions),
            "labels_differ": len(self.mixed),
            "warnings": self.warnings,
            "cells": [
                {"cell_id": c.cell_id, **c.identity, "status": c.status, "label": c.label,
                 **({"note": c.note} if c.note else {}),
                 "labels": {"baseline": list(c.baseline_labels), "current": list(c.current_labels)},
                 "labels_differ": c.labels_differ,
                 "regressed": bool(c.regressions), "metrics": [_clean(asdict(m)) for m in c.metrics]}
                for c in self.cells
            ],
        }


def _clean(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


def min_mannwhitney_p(n1: int, n2: int) -> float:
    """The smallest one-sided p-value an exact Mann-Whitney U test can give for sizes n1, n2."""
    return 1.0 / math.comb(n1 + n2, n1) if n1 and n2 else 1.0


def one_sided_p(baseline: Sequence[float], current: Sequence[float], worse_is_lower: bool,
                test: str = "mannwhitney") -> float:
    """p-value that ``current`` is worse than ``baseline`` (lower when ``worse_is_lower``)."""
    b, c = np.asarray(baseline, float), np.asarray(current, float)
    alternative = "less" if worse_is_lower else "greater"
    if test == "mannwhitney":
        return float(sps.mannwhitneyu(c, b, alternative=alternative).pvalue)
    if test == "welch":
        if np.var(b) == 0 and np.var(c) == 0:  # no spread at all: the means decide
            diff = float(np.mean(c) - np.mean(b))
            return 0.0 if (diff < 0 if worse_is_lower else diff > 0) else 1.0
        return float(sps.ttest_ind(c, b, equal_var=False, alternative=alternative).pvalue)
    raise ValueError(f"unknown test {test!r}; use one of {', '.join(TESTS)}")


def judge_u95(baseline: Sequence[float], current: Sequence[float], baseline_u95: Sequence[float],
              current_u95: Sequence[float], rule: MetricRule) -> MetricVerdict:
    """The verdict on a figure that carries its own 95 % half-width (one evaluation per job).

    Each side is its median value with the median of its half-widths (a history
    window of such evaluations keeps the typical half-width, not a shrunk one).
    The change is significant when ``|current - baseline|`` exceeds
    ``sqrt(u_b**2 + u_c**2)``; it is a regression when it is also beyond the
    floor in the bad direction.
    """
    b, c = np.asarray(baseline, float), np.asarray(current, float)
    bm, cm = float(np.median(b)), float(np.median(c))
    ub, uc = float(np.median(np.asarray(baseline_u95, float))), float(np.median(np.asarray(current_u95, float)))
    combined = math.hypot(ub, uc)
    change = (cm - bm) / abs(bm) if bm != 0 else (0.0 if cm == bm else math.copysign(math.inf, cm - bm))
    signed = change * rule.direction
    significant = abs(cm - bm) > combined
    verdict, note = UNCHANGED, ""
    within = f"±{combined:.3g} combined"
    if abs(signed) > rule.floor:
        if significant:
            verdict = REGRESSION if signed < 0 else IMPROVEMENT
            note = f"beyond {within}"
        elif signed < 0:
            verdict, note = INCONCLUSIVE, f"within {within}"
        else:
            note = f"better by more than the floor, but within {within}"
    elif significant:
        note = f"beyond {within}, but within the {rule.floor:.0%} floor"
    return MetricVerdict(metric=rule.name, direction=rule.direction, floor=rule.floor,
                         baseline_n=len(b), baseline_median=bm, current_n=len(c), current_median=cm,
                         change=change, p_value=None, test=U95_TEST, verdict=verdict, note=note)


def judge(baseline: Sequence[float], current: Sequence[float], rule: MetricRule, *,
          alpha: float = ALPHA, test: str = "mannwhitney",
          baseline_u95: Sequence[float] = (), current_u95: Sequence[float] = ()) -> MetricVerdict:
    """The verdict on one metric of one cell, from the two samples (in the metric's unit).

    When both sides give the figure's own half-widths (``*_u95``, one per
    value), :func:`judge_u95` decides instead of the repetition test.
    """
    b = np.asarray([v for v in baseline if v == v], float)
    c = np.asarray([v for v in current if v == v], float)
    ub = [u for u in baseline_u95 if u == u and u >= 0]
    uc = [u for u in current_u95 if u == u and u >= 0]
    if len(b) and len(c) and ub and uc:
        return judge_u95(b, c, ub, uc, rule)
    base = dict(metric=rule.name, direction=rule.direction, floor=rule.floor, baseline_n=len(b),
                current_n=len(c), test=test)
    if len(b) == 0 or len(c) == 0:
        side = "baseline" if len(b) == 0 else "current run"
        return MetricVerdict(**base, baseline_median=float(np.median(b)) if len(b) else None,
                             current_median=float(np.median(c)) if len(c) else None, change=None,
                             p_value=None, verdict=MISSING, note=f"not measured in the {side}")
    bm, cm = float(np.median(b)), float(np.median(c))
    change = (cm - bm) / abs(bm) if bm != 0 else (0.0 if cm == bm else math.copysign(math.inf, cm - bm))
    signed = change * rule.direction  # > 0 is better, < 0 worse
    worse_is_lower = rule.direction > 0
    if signed < 0:
        p = one_sided_p(b, c, worse_is_lower, test)
    else:
        p = one_sided_p(b, c, not worse_is_lower, test)
    verdict, note = UNCHANGED, ""
    too_few = (test == "mannwhitney" and min_mannwhitney_p(len(b), len(c)) > alpha) or \
              (test == "welch" and (len(b) < 2 or len(c) < 2))
    if abs(signed) > rule.floor:
        if p == p and p <= alpha:
            verdict = REGRESSION if signed < 0 else IMPROVEMENT
        elif signed < 0:
            verdict = INCONCLUSIVE
            note = (f"too few repetitions for a significant {test} test (n={len(b)} vs {len(c)})"
                    if too_few else f"not significant (p={p:.3g} > {alpha:g})")
        else:
            note = f"better by more than the floor, but not significant (p={p:.3g})"
    elif p == p and p <= alpha:
        note = f"significant, but within the {rule.floor:.0%} floor"
    return MetricVerdict(**base, baseline_median=bm, current_median=cm, change=change,
                         p_value=p if p == p else None, verdict=verdict, note=note)


_NOT_METRICS = {"repetition", "simulated", "emulated", "stand_in", "created_at"}
_IDENTITY = ("device", "framework", "model", "quantization", "workload", "kind", "params", "simulated")


def labels_word(labels: Sequence[str]) -> str:
    """``simulated, synthetic``, or ``measured`` for none (real hardware, the real framework)."""
    return ", ".join(labels) if labels else "measured"


def frame_labels(jobs: pd.DataFrame) -> tuple[str, ...]:
    """Every label among the jobs of a frame (its ``labels`` column), in :data:`melt.labels.LABELS` order."""
    if jobs.empty or "labels" not in jobs.columns:
        return ()
    return parse_labels(",".join(v for v in jobs["labels"] if isinstance(v, str)))


def _identity(row: pd.Series) -> dict[str, Any]:
    out = {}
    for k in _IDENTITY:
        if k in row.index:
            v = row[k]
            out[k] = None if (isinstance(v, float) and v != v) else (v.item() if hasattr(v, "item") else v)
    return out


def same_execution(baseline: pd.DataFrame, current: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The baseline jobs that ran the same kind of code as ``current`` (see ``execution_of``), and a note.

    A cell's id does not include the build's CPU architecture or emulation, so
    one device can hold native and emulated jobs of one cell (a virtual phone
    started with another ABI): their speeds differ by the emulator, not by a
    change worth a verdict. Jobs whose record does not say are kept.
    """
    if "execution" not in baseline.columns or "execution" not in current.columns:
        return baseline, ""
    ran = set(current["execution"].dropna())
    if not ran:
        return baseline, ""
    keep = baseline["execution"].isna() | baseline["execution"].isin(ran)
    if keep.all():
        return baseline, ""
    other = ", ".join(sorted(set(baseline.loc[~keep, "execution"])))
    now = ", ".join(sorted(ran))
    if not keep.any():
        return baseline[keep], f"baseline ran {other}, current ran {now}: not compared"
    return baseline[keep], f"left out {int((~keep).sum())} baseline jobs that ran {other}"


def _u95_of(jobs: pd.DataFrame, metric: str) -> list[float]:
    """The half-widths beside the measured values of ``metric`` (empty when the jobs give none)."""
    col = uncertainty_column(metric)
    if metric not in jobs.columns or col not in jobs.columns:
        return []
    rows = jobs[jobs[metric].notna()]
    u = pd.to_numeric(rows[col], errors="coerce")
    return u.tolist() if u.notna().all() else []  # a value without its ± is judged by repetitions


QUALITY_KIND = "quality"


def quality_keyed(jobs: pd.DataFrame) -> pd.DataFrame:
    """``jobs`` with each quality job's ``cell_id`` replaced by a key without the model file's hash.

    A quality cell is the device, framework, model name, workload and its
    parameters (the reference among them): a file swapped under the same
    name (requantized, damaged) is what a quality comparison exists to
    catch, so it must meet its baseline instead of becoming a new cell. The
    key is ``q`` and 15 hex digits; other jobs keep their ``cell_id``.
    """
    if jobs.empty or "kind" not in jobs.columns or not (jobs["kind"] == QUALITY_KIND).any():
        return jobs
    import hashlib
    import json

    out = jobs.copy()
    mask = out["kind"] == QUALITY_KIND
    cols = [c for c in ("device", "framework", "model", "workload", "params") if c in out.columns]
    out.loc[mask, "cell_id"] = [
        "q" + hashlib.sha256(json.dumps([str(v) for v in row], separators=(",", ":")).encode())
        .hexdigest()[:15] for row in out.loc[mask, cols].itertuples(index=False)]
    return out


def check_metric_names(names: Sequence[str], *frames: pd.DataFrame) -> None:
    """Raise :class:`~melt.errors.UnknownNameError` for a name no frame has a metric column for."""
    from melt.errors import UnknownNameError

    known = sorted({c for frame in frames for c in frame.columns
                    if c not in _NOT_METRICS and pd.api.types.is_numeric_dtype(frame[c])})
    for name in names:
        if name != "all" and name not in known:
            raise UnknownNameError("metric", name, known)


def compare_frames(baseline: pd.DataFrame, current: pd.DataFrame, *,
                   metrics: Sequence[str] = DEFAULT_COMPARED, floors: dict[str, float] | None = None,
                   default_floor: float = DEFAULT_FLOOR, alpha: float = ALPHA,
                   test: str = "mannwhitney", current_cells_only: bool = False,
                   baseline_label: str = "baseline", current_label: str = "current",
                   mode: str = "runs", names: Sequence[str] = ()) -> Comparison:
    """Compare two jobs frames cell by cell (``ok`` jobs only).

    ``baseline`` and ``current`` have the :func:`melt.analysis.frames.jobs_frame`
    shape (identity columns plus one column per metric). With
    ``current_cells_only`` the cells seen only in the baseline are left out
    (history mode). ``floors`` maps metric -> fraction; ``metrics=("all",)``
    compares every metric that has a direction. ``names`` (the metric and
    floor names a user gave) that no job of either frame has raise
    :class:`~melt.errors.UnknownNameError`: a typo must not compare nothing.
    """
    if test not in TESTS:
        raise ValueError(f"unknown test {test!r}; use one of {', '.join(TESTS)}")
    if names:
        check_metric_names(names, baseline, current)
    if list(metrics) == ["all"]:
        metrics = sorted({c for frame in (baseline, current) for c in frame.columns
                          if c not in _NOT_METRICS and pd.api.types.is_numeric_dtype(frame[c])})
    metric_rules = rules(list(metrics), floors, default_floor)
    ok_b = baseline[baseline["status"] == "ok"] if not baseline.empty else baseline
    ok_c = current[current["status"] == "ok"] if not current.empty else current
    ids_c = list(dict.fromkeys(current["cell_id"])) if not current.empty else []
    ids_b = list(dict.fromkeys(baseline["cell_id"])) if not baseline.empty else []
    order = ids_c + ([] if current_cells_only else [i for i in ids_b if i not in set(ids_c)])
    cells = []
    for cell in order:
        gb = ok_b[ok_b["cell_id"] == cell] if not ok_b.empty else ok_b
        gc = ok_c[ok_c["cell_id"] == cell] if not ok_c.empty else ok_c
        src = current[current["cell_id"] == cell] if cell in ids_c else baseline[baseline["cell_id"] == cell]
        identity = _identity(src.iloc[0])
        if gb.empty or gc.empty:
            status = "no-baseline" if gb.empty else "no-current"
            cells.append(CellVerdict(cell, identity, status, baseline_labels=frame_labels(gb),
                                     current_labels=frame_labels(gc)))
            continue
        gb, note = same_execution(gb, gc)
        if gb.empty:
            cells.append(CellVerdict(cell, identity, "incomparable", note=note,
                                     current_labels=frame_labels(gc)))
            continue
        verdicts = []
        for rule in metric_rules:
            if rule.name not in gb.columns and rule.name not in gc.columns:
                continue
            vb = gb[rule.name].dropna().tolist() if rule.name in gb.columns else []
            vc = gc[rule.name].dropna().tolist() if rule.name in gc.columns else []
            if not vb and not vc:
                continue
            verdicts.append(judge(vb, vc, rule, alpha=alpha, test=test,
                                  baseline_u95=_u95_of(gb, rule.name), current_u95=_u95_of(gc, rule.name)))
        cells.append(CellVerdict(cell, identity, "compared", verdicts, note=note,
                                 baseline_labels=frame_labels(gb), current_labels=frame_labels(gc)))
    return Comparison(baseline_label, current_label, mode, test, alpha, cells)

"""History from the SQLite index: the same cell across runs, for baselines and trends.

The index (``results/melt.db``) holds every run, job and metric; a cell's
history is its ``ok`` jobs in earlier runs, ordered by the run's
``created_at``. These functions read the index and the run folders, then hand
pure frames to :mod:`melt.analysis.regress` and :mod:`melt.analysis.steps`.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

import pandas as pd

from melt.analysis.frames import jobs_frame
from melt.analysis.metrics import (DEFAULT_COMPARED, DEFAULT_FLOOR, QUALITY_METRICS, direction,
                                   uncertainty_column)
from melt.analysis.regress import ALPHA, Comparison, check_metric_names, compare_frames, quality_keyed
from melt.analysis.steps import detect_steps
from melt.errors import ResultsError
from melt.labels import SIMULATED, parse_labels
from melt.store.index import row_labels
from melt.store.runs import ResultsStore

_JOB_COLUMNS = ("j.run_id, r.created_at, j.job_id, j.cell_id, j.status, j.reason, j.device, j.framework, "
                "j.model, j.workload, j.kind, j.params, j.repetition, j.simulated, j.execution, j.labels")
_CHUNK = 500  # SQLite's host-parameter limit is 999 on old builds
_RUN_CHUNK = 400  # run ids beside a chunk of cell ids stay under it


def index_jobs(store: ResultsStore, *, cell_ids: Sequence[str] | None = None,
               metrics: Sequence[str] | None = None, device: str | None = None,
               framework: str | None = None, model: str | None = None,
               workload: str | None = None, ok_only: bool = True,
               before: tuple[str, str] | None = None, last_n: int | None = None) -> pd.DataFrame:
    """Jobs from the index as a jobs-frame (identity, ``created_at`` of the run, one column per metric).

    Filters combine with AND; ``metrics`` limits the metric columns read.
    ``before``: ``(created_at, run_id)`` of a run: only jobs of runs created
    before it, that run left out. ``last_n``: per cell, only the jobs of its
    ``last_n`` most recent runs (as :func:`last_runs` keeps them), chosen in
    SQL from the ``jobs_cell_status`` index before any job row is read. The
    other filters use ``jobs_device_status``; the metrics are read by primary
    key for the selected jobs only (:mod:`melt.store.index`).
    """
    where, args = [], []
    for col, val in (("device", device), ("framework", framework), ("model", model),
                     ("workload", workload)):
        if val is not None:
            where.append(f"j.{col} = ?")
            args.append(val)
    if ok_only:
        where.append("j.status = 'ok'")
    if before is not None:
        where.append("r.created_at < ? AND j.run_id != ?")
        args += [before[0], before[1]]
    chunks: list[list[str] | None] = [None]
    if cell_ids is not None:
        ids = list(dict.fromkeys(cell_ids))
        chunks = [ids[i:i + _CHUNK] for i in range(0, len(ids), _CHUNK)] or [[]]
    rows: list[dict[str, Any]] = []
    mrows: list[tuple] = []
    for chunk in chunks:
        clause = list(where)
        chunk_args = list(args)
        if chunk is not None:
            clause.append(f"j.cell_id IN ({','.join('?' * len(chunk))})")
            chunk_args += chunk
        base = " FROM jobs j JOIN runs r ON r.run_id = j.run_id" + (" WHERE " + " AND ".join(clause) if clause else "")
        if not last_n:
            found = [dict(r) for r in store.index.query("SELECT " + _JOB_COLUMNS + base, tuple(chunk_args))]
            rows += found
            if found:
                msql = ("SELECT m.run_id, m.job_id, m.name, m.value FROM (SELECT j.run_id, j.job_id" + base
                        + ") s JOIN metrics m ON m.run_id = s.run_id AND m.job_id = s.job_id")
                margs = list(chunk_args)
                if metrics:
                    msql += f" WHERE m.name IN ({','.join('?' * len(metrics))})"
                    margs += list(metrics)
                mrows += [tuple(r) for r in store.index.query(msql, tuple(margs))]
            continue
        # first the (cell, run) pairs to keep, read from the indexes alone (no job row is read) ...
        pairs_sql = ("SELECT cell_id, run_id FROM (SELECT cell_id, run_id, ROW_NUMBER() OVER (PARTITION BY "
                     "cell_id ORDER BY created_at DESC, run_id DESC) AS k FROM (SELECT DISTINCT j.cell_id, "
                     "j.run_id, r.created_at" + base + ")) WHERE k <= ?")
        pairs = {(r[0], r[1]) for r in store.index.query(pairs_sql, (*chunk_args, int(last_n)))}
        run_ids = sorted({run for _, run in pairs})
        # ... then the jobs and metrics of those runs, by their primary keys
        for i in range(0, len(run_ids), _RUN_CHUNK):
            part = run_ids[i:i + _RUN_CHUNK]
            marks = ",".join("?" * len(part))
            found = [dict(r) for r in store.index.query(
                "SELECT " + _JOB_COLUMNS + base + (" AND " if clause else " WHERE ") + f"j.run_id IN ({marks})",
                (*chunk_args, *part)) if (r["cell_id"], r["run_id"]) in pairs]
            rows += found
            keys = {(r["run_id"], r["job_id"]) for r in found}
            msql = f"SELECT run_id, job_id, name, value FROM metrics WHERE run_id IN ({marks})"
            if metrics:
                msql += f" AND name IN ({','.join('?' * len(metrics))})"
            mrows += [tuple(r) for r in store.index.query(msql, (*part, *(metrics or ())))
                      if (r[0], r[1]) in keys]
    if not rows:
        return pd.DataFrame(columns=["run_id", "created_at", "job_id", "cell_id", "status"])
    jobs = pd.DataFrame(rows)
    jobs["labels"] = [row_labels(r.get("labels"), r.get("simulated"), r.get("execution")) for r in rows]
    jobs["simulated"] = [SIMULATED in parse_labels(t) for t in jobs["labels"]]
    if mrows:
        long = pd.DataFrame(mrows, columns=["run_id", "job_id", "name", "value"])
        wide = long.pivot_table(index=["run_id", "job_id"], columns="name", values="value",
                                aggfunc="last").reset_index()
        wide.columns.name = None
        jobs = jobs.merge(wide, on=["run_id", "job_id"], how="left")
    return jobs.sort_values(["created_at", "run_id", "job_id"], kind="stable").reset_index(drop=True)


def last_runs(jobs: pd.DataFrame, last_n: int) -> pd.DataFrame:
    """Keep, per cell, the jobs of its ``last_n`` most recent runs (by ``created_at``)."""
    if jobs.empty:
        return jobs
    runs = jobs[["cell_id", "run_id", "created_at"]].drop_duplicates()
    runs = runs.sort_values(["created_at", "run_id"]).groupby("cell_id", sort=False).tail(last_n)
    keep = set(zip(runs["cell_id"], runs["run_id"]))
    mask = [(c, r) in keep for c, r in zip(jobs["cell_id"], jobs["run_id"])]
    return jobs[mask].reset_index(drop=True)


def compare_runs(store: ResultsStore, baseline_ref: str, current_ref: str, *,
                 metrics: Sequence[str] = DEFAULT_COMPARED, floors: dict[str, float] | None = None,
                 default_floor: float = DEFAULT_FLOOR, alpha: float = ALPHA,
                 names: Sequence[str] = ()) -> Comparison:
    """Compare two runs cell by cell with Mann-Whitney U on the repetitions.

    Quality jobs meet by model name, not by file (:func:`~melt.analysis.regress.quality_keyed`).

    Raises ``ResultsError`` for an unknown run, or when the runs share no cell.
    """
    base, cur = store.open_run(baseline_ref), store.open_run(current_ref)
    jb, jc = quality_keyed(jobs_frame([base])), quality_keyed(jobs_frame([cur]))
    if not jb.empty and not jc.empty and not set(jb["cell_id"]) & set(jc["cell_id"]):
        raise ResultsError(
            f"runs {base.run_id} and {cur.run_id} have no job definition (cell) in common: "
            "same device, framework build recipe, model file and parameters are needed")
    return compare_frames(jb, jc, metrics=metrics, floors=floors, default_floor=default_floor,
                          alpha=alpha, test="mannwhitney", baseline_label=base.run_id,
                          current_label=cur.run_id, mode="runs", names=names)


def compare_history(store: ResultsStore, current_ref: str, last_n: int, *,
                    metrics: Sequence[str] = DEFAULT_COMPARED, floors: dict[str, float] | None = None,
                    default_floor: float = DEFAULT_FLOOR, alpha: float = ALPHA,
                    names: Sequence[str] = ()) -> Comparison:
    """Compare each cell of a run with its last ``last_n`` earlier runs (Welch's t-test).

    The history comes from the index: ``ok`` jobs of the same ``cell_id`` in
    runs created before this one. Raises ``ResultsError`` for an unknown run
    and ``ValueError`` when ``last_n`` < 1.
    """
    if last_n < 1:
        raise ValueError("--history needs at least 1 run")
    cur = store.open_run(current_ref)
    jc = jobs_frame([cur])
    cells = list(dict.fromkeys(jc["cell_id"])) if not jc.empty else []
    if names:  # the history frame holds only the asked metrics: check against the run's own
        check_metric_names(names, jc)
    asked = list(metrics) + [uncertainty_column(m) for m in metrics if m in QUALITY_METRICS]
    # a quality figure comes with its ±; the last runs are chosen in SQL, before anything is read
    hist = index_jobs(store, cell_ids=cells, metrics=asked,
                      before=(cur.manifest.get("created_at") or "", cur.run_id), last_n=last_n)
    n_runs = hist["run_id"].nunique() if not hist.empty else 0
    return compare_frames(hist, jc, metrics=metrics, floors=floors, default_floor=default_floor,
                          alpha=alpha, test="welch", current_cells_only=True,
                          baseline_label=f"last {last_n} runs per cell ({n_runs} runs in all)",
                          current_label=cur.run_id, mode="history")


def metric_history(store: ResultsStore, metric: str, *, device: str | None = None,
                   framework: str | None = None, model: str | None = None,
                   workload: str | None = None, cell_id: str | None = None,
                   last_n: int | None = None) -> pd.DataFrame:
    """One row per (cell, run), oldest first: identity, ``run_id``, ``created_at``, ``labels``
    (of the run's jobs, comma-separated), ``n``, ``median`` (of the repetitions, in the
    metric's unit), ``min``, ``max``."""
    jobs = index_jobs(store, metrics=[metric], device=device, framework=framework, model=model,
                      workload=workload, cell_ids=[cell_id] if cell_id else None)
    cols = ["cell_id", "device", "framework", "model", "workload", "params", "run_id", "created_at",
            "labels", "n", "median", "min", "max"]
    if jobs.empty or metric not in jobs.columns:
        return pd.DataFrame(columns=cols)
    jobs = jobs.dropna(subset=[metric])
    if last_n:
        jobs = last_runs(jobs, last_n)
    grouped = jobs.groupby(["cell_id", "run_id"], sort=False).agg(
        device=("device", "first"), framework=("framework", "first"), model=("model", "first"),
        workload=("workload", "first"), params=("params", "first"),
        created_at=("created_at", "first"), labels=("labels", _union),
        n=(metric, "size"), median=(metric, "median"),
        min=(metric, "min"), max=(metric, "max")).reset_index()
    return grouped.sort_values(["cell_id", "created_at", "run_id"])[cols].reset_index(drop=True)


def _union(labels: pd.Series) -> str:
    return ",".join(parse_labels(",".join(v for v in labels if isinstance(v, str))))


def history_steps(history: pd.DataFrame, metric: str, *, min_size: int = 3, floor: float = 0.05,
                  alpha: float = 0.01) -> pd.DataFrame:
    """Where each cell's per-run median changed level (see :func:`detect_steps`).

    Columns: ``cell_id``, ``run_id`` and ``created_at`` (first run at the new
    level), ``before``, ``after``, ``change`` (fraction), ``p_value``,
    ``worse`` (the change goes the metric's bad way).
    """
    out = []
    d = direction(metric)
    for cell, g in history.groupby("cell_id", sort=False):
        g = g.sort_values(["created_at", "run_id"])
        for s in detect_steps(g["median"].to_list(), min_size=min_size, floor=floor, alpha=alpha):
            row = g.iloc[s.index]
            out.append({"cell_id": cell, "run_id": row["run_id"], "created_at": row["created_at"],
                        "before": s.before, "after": s.after, "change": s.change,
                        "p_value": s.p_value, "worse": bool(d and s.change * d < 0)})
    return pd.DataFrame(out, columns=["cell_id", "run_id", "created_at", "before", "after",
                                      "change", "p_value", "worse"])


def params_text(params: Any) -> str:
    """``k=v, ...`` from a params dict or its sorted-JSON form (prompts shortened)."""
    if isinstance(params, str):
        try:
            params = json.loads(params)
        except ValueError:
            return params
    if not isinstance(params, dict):
        return "" if params is None else str(params)
    out = []
    for k, v in params.items():
        s = str(v)
        out.append(f"{k}={s if len(s) <= 24 else s[:21] + '...'}")
    return ", ".join(out)

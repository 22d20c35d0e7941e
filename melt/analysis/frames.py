"""Stored runs as tidy pandas DataFrames, for notebooks and reports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import pandas as pd

from melt.store.paths import default_results_dir
from melt.store.runs import ResultsStore, Run

JOB_COLUMNS = [
    "run_id", "job_id", "cell_id", "status", "reason", "device", "framework", "model",
    "workload", "kind", "params", "repetition", "simulated", "started_at",
]


def _runs(refs: Iterable[str] | None, results_dir: Path | None) -> list[Run]:
    store = ResultsStore(results_dir or default_results_dir())
    if refs is None:
        return store.runs()
    return [store.open_run(r) for r in refs]


def jobs_frame(runs: Iterable[Run]) -> pd.DataFrame:
    """One row per job: identity columns, then one column per metric (NaN when absent)."""
    rows = []
    for run in runs:
        for job in run.jobs():
            row = {c: job.get(c) for c in JOB_COLUMNS if c != "run_id"}
            row["run_id"] = run.run_id
            row["params"] = json.dumps(job.get("params"), sort_keys=True)
            for name, value in (job.get("metrics") or {}).items():
                row[name] = value
            rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=JOB_COLUMNS)
    ordered = [c for c in JOB_COLUMNS if c in frame.columns]
    return frame[ordered + sorted(c for c in frame.columns if c not in ordered)]


def metrics_frame(jobs: pd.DataFrame) -> pd.DataFrame:
    """Long form: run_id, job_id, cell_id, metric, value (absent metrics have no row)."""
    id_cols = [c for c in JOB_COLUMNS if c in jobs.columns]
    metric_cols = [c for c in jobs.columns if c not in JOB_COLUMNS]
    long = jobs.melt(id_vars=id_cols, value_vars=metric_cols, var_name="metric", value_name="value")
    return long.dropna(subset=["value"]).reset_index(drop=True)


def load_results(runs: Iterable[str] | None = None, results_dir: Path | str | None = None) -> dict[str, pd.DataFrame]:
    """``{"jobs": ..., "metrics": ...}`` for the given run ids (all runs when None)."""
    loaded = _runs(runs, Path(results_dir) if results_dir else None)
    jobs = jobs_frame(loaded)
    return {"jobs": jobs, "metrics": metrics_frame(jobs)}

"""Stored runs as tidy pandas DataFrames, for notebooks and reports.

Three frames, joined by ``run_id`` and ``job_id``:

- ``jobs``: one row per job, identity columns then one column per metric;
  ``simulated``, ``emulated`` and ``stand_in`` are booleans and ``labels``
  the same in words (:func:`melt.labels.job_labels`, comma-separated);
- ``metrics``: the same numbers in long form (one row per job and metric);
- ``traces``: one row per telemetry sample, ``t_s`` in seconds on the
  device clock, then one column per channel (unit in the name).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Iterator

import pandas as pd

from melt.labels import EMULATED, SIMULATED, STAND_IN, job_labels, labels_text
from melt.store.index import execution_of
from melt.store.paths import default_results_dir
from melt.store.runs import ResultsStore, Run

JOB_COLUMNS = [
    "run_id", "job_id", "cell_id", "status", "reason", "device", "framework", "model",
    "quantization", "workload", "kind", "params", "repetition", "simulated", "emulated",
    "stand_in", "labels", "execution", "started_at",
]

#: Name of the telemetry file inside a job folder.
TRACE_FILE = "trace.parquet"


def quantization_of(job: dict[str, Any]) -> str | None:
    """The model's quantization as recorded in the job's provenance (None when unknown)."""
    model = (job.get("provenance") or {}).get("model") or {}
    q = model.get("quantization")
    return str(q) if q else None


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
            row["quantization"] = quantization_of(job)
            labels = job_labels(job)
            row["simulated"], row["emulated"] = SIMULATED in labels, EMULATED in labels
            row["stand_in"], row["labels"] = STAND_IN in labels, labels_text(labels, ",")
            row["execution"] = execution_of(job)
            row["params"] = json.dumps(job.get("params"), sort_keys=True)
            for name, value in (job.get("metrics") or {}).items():
                if name not in row:  # a metric never overwrites an identity column or a label
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


def read_trace(run: Run, job_id: str, columns: list[str] | None = None) -> pd.DataFrame | None:
    """The telemetry samples of one job, or None when it has no trace (or it is unreadable)."""
    path = run.job_dir(job_id) / TRACE_FILE
    if not path.is_file():
        return None
    try:
        return pd.read_parquet(path, columns=columns)
    except (OSError, ValueError):
        return None


def iter_traces(runs: Iterable[Run]) -> Iterator[tuple[Run, dict[str, Any], pd.DataFrame]]:
    """``(run, job record, samples)`` for every job that has a trace, one at a time.

    Use this instead of :func:`traces_frame` when the traces together would not
    fit in memory (the report does).
    """
    for run in runs:
        for job in run.jobs():
            frame = read_trace(run, job["job_id"])
            if frame is not None and not frame.empty:
                yield run, job, frame


def traces_frame(runs: Iterable[Run]) -> pd.DataFrame:
    """Every sample of every job in one frame: run_id, job_id, t_s, then the channels.

    A channel a job lacks is NaN in its rows.
    """
    parts = []
    for run, job, frame in iter_traces(runs):
        frame = frame.copy()
        frame.insert(0, "job_id", job["job_id"])
        frame.insert(0, "run_id", run.run_id)
        parts.append(frame)
    if not parts:
        return pd.DataFrame(columns=["run_id", "job_id", "t_s"])
    return pd.concat(parts, ignore_index=True, sort=False)


def load_results(runs: Iterable[str] | None = None, results_dir: Path | str | None = None,
                 *, traces: bool = True) -> dict[str, pd.DataFrame]:
    """``{"jobs", "metrics", "traces"}`` for the given run ids (all runs when None).

    With ``traces=False`` the ``traces`` frame is empty (nothing is read from
    the parquet files). Raises ``ResultsError`` for an unknown run.
    """
    loaded = _runs(runs, Path(results_dir) if results_dir else None)
    jobs = jobs_frame(loaded)
    out = {"jobs": jobs, "metrics": metrics_frame(jobs)}
    out["traces"] = traces_frame(loaded) if traces else pd.DataFrame(columns=["run_id", "job_id", "t_s"])
    return out

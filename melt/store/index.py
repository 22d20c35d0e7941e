"""SQLite index of every run and job, for history queries and the list of runs.

The folders are the truth; the index can be rebuilt from them
(``melt results reindex``). Which query each index serves:

- ``jobs_cell_status (cell_id, status, run_id)``: a cell's ``ok`` jobs and their
  runs (``melt compare --history``, ``melt history --cell``);
- ``jobs_device_status (device, status)``: ``melt history --device``;
- ``runs_created (created_at, run_id)``: runs in order, ``latest``;
- the primary keys: a run's jobs (``melt results list`` counts them per run)
  and a job's metrics (every history query reads the asked metrics of the
  jobs it selected, and only theirs). An index on the metric's name alone
  (older files have one, ``metrics_name``) is dropped: the planner would read
  every job's value of that metric through it.

A run row carries ``row_version``; a row from an older melt (NULL) lacks
fields the list of runs reads, which then come from the run's manifest once.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from pathlib import Path
from typing import Any, Iterator

from melt.errors import ResultsError
from melt.labels import EMULATED, SIMULATED, job_labels, labels_text

_DDL = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, created_at TEXT, finished_at TEXT, status TEXT,
    experiment TEXT, melt_version TEXT, path TEXT, total_jobs INTEGER, row_version INTEGER
);
CREATE TABLE IF NOT EXISTS jobs (
    run_id TEXT, job_id TEXT, cell_id TEXT, status TEXT, reason TEXT,
    device TEXT, framework TEXT, model TEXT, workload TEXT, kind TEXT,
    params TEXT, repetition INTEGER, simulated INTEGER, started_at TEXT, execution TEXT,
    labels TEXT,
    PRIMARY KEY (run_id, job_id)
);
CREATE TABLE IF NOT EXISTS metrics (
    run_id TEXT, job_id TEXT, name TEXT, value REAL,
    PRIMARY KEY (run_id, job_id, name)
);
"""

#: Indexes an index file written by an older melt gets when this one opens it.
_INDEXES = """
DROP INDEX IF EXISTS jobs_cell;
DROP INDEX IF EXISTS metrics_name;
CREATE INDEX IF NOT EXISTS jobs_cell_status ON jobs (cell_id, status, run_id);
CREATE INDEX IF NOT EXISTS jobs_device_status ON jobs (device, status);
CREATE INDEX IF NOT EXISTS runs_created ON runs (created_at, run_id);
"""

#: What a run row written by this melt holds (``row_version``): 2 adds ``total_jobs``.
RUN_ROW_VERSION = 2


def execution_of(job: dict[str, Any]) -> str | None:
    """What kind of code ran a job: its build's CPU ABI, and ``(emulated)`` under an emulator.

    ``"x86_64"``, ``"arm64-v8a (emulated)"``; None when the record does not say.
    Speeds of different code, or of code under an emulator, are not compared.
    """
    build = ((job.get("provenance") or {}).get("framework_build") or {})
    abi = build.get("abi") or ((job.get("provenance") or {}).get("device") or {}).get("abi")
    if not abi:
        return None
    return f"{abi} (emulated)" if job.get("emulated") else str(abi)


def row_labels(labels: str | None, simulated: Any, execution: str | None) -> str:
    """A job's labels (``simulated,emulated``) from its index row; a row indexed before the
    ``labels`` column existed has ``simulated`` and ``execution`` only
    (``melt results reindex`` fills it in)."""
    if isinstance(labels, str):
        return labels
    old = [SIMULATED] if simulated else []
    if str(execution or "").endswith("(emulated)"):
        old.append(EMULATED)
    return ",".join(old)


def _labels_of(part: str) -> list[str]:
    """Labels from one ``group_concat`` part of :meth:`Index.run_rows`: a labels text, or
    ``?<simulated>|<execution>`` for a row without one."""
    if part.startswith("?"):
        simulated, _, execution = part[1:].partition("|")
        return [w for w in row_labels(None, simulated not in ("", "0"), execution).split(",") if w]
    return [part]


class Index:
    """A thin wrapper over one SQLite file.

    A damaged file raises :class:`ResultsError` that says to run
    ``melt results reindex``, never a sqlite traceback.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        with self._guard():
            self._db = sqlite3.connect(str(self.path), timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_DDL)
            for table, added in (("jobs", ("execution TEXT", "labels TEXT")),
                                 ("runs", ("total_jobs INTEGER", "row_version INTEGER"))):
                columns = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
                for column in added:  # an index written before the column existed
                    if column.split()[0] not in columns:
                        with self._db:
                            self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column}")
            self._db.executescript(_INDEXES)

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise ResultsError(f"{self.path}: busy ({exc}); try again") from None
            raise ResultsError(f"{self.path}: the results index is damaged ({exc}); rebuild it from "
                               "the run folders with `melt results reindex`") from None
        except sqlite3.DatabaseError as exc:
            raise ResultsError(f"{self.path}: the results index is damaged ({exc}); rebuild it from "
                               "the run folders with `melt results reindex`") from None

    def add_run(self, manifest: dict[str, Any], run_dir: Path) -> None:
        with self._guard(), self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO runs (run_id, created_at, finished_at, status, experiment, "
                "melt_version, path, total_jobs, row_version) VALUES (?,?,?,?,?,?,?,?,?)",
                (
                    manifest["run_id"],
                    manifest.get("created_at"),
                    manifest.get("finished_at"),
                    manifest.get("status"),
                    (manifest.get("experiment") or {}).get("name"),
                    manifest.get("melt_version"),
                    str(Path(run_dir).resolve()),
                    manifest.get("total_jobs") if isinstance(manifest.get("total_jobs"), int) else None,
                    RUN_ROW_VERSION,
                ),
            )

    def add_job(self, run_id: str, job: dict[str, Any]) -> None:
        labels = job_labels(job)
        with self._guard(), self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO jobs (run_id, job_id, cell_id, status, reason, device, framework, "
                "model, workload, kind, params, repetition, simulated, started_at, execution, labels) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    run_id,
                    job["job_id"],
                    job.get("cell_id"),
                    job.get("status"),
                    job.get("reason"),
                    job.get("device"),
                    job.get("framework"),
                    job.get("model"),
                    job.get("workload"),
                    job.get("kind"),
                    json.dumps(job.get("params"), sort_keys=True),
                    job.get("repetition"),
                    int(SIMULATED in labels),
                    job.get("started_at"),
                    execution_of(job),
                    labels_text(labels, ","),
                ),
            )
            self._db.execute("DELETE FROM metrics WHERE run_id=? AND job_id=?", (run_id, job["job_id"]))
            self._db.executemany(
                "INSERT INTO metrics VALUES (?,?,?,?)",
                [
                    (run_id, job["job_id"], k, float(v))
                    for k, v in (job.get("metrics") or {}).items()
                    if isinstance(v, (int, float))  # bools count as 0/1
                ],
            )

    def run_rows(self) -> dict[str, dict[str, Any]]:
        """Every run row with its jobs counted: ``run_id`` -> ``created_at``, ``experiment``,
        ``status``, ``total_jobs``, ``row_version``, ``jobs_ok``, ``labels`` (a set, over the
        run's jobs). One query over the primary keys."""
        rows = self.query(
            "SELECT r.run_id, r.created_at, r.experiment, r.status, r.total_jobs, r.row_version, "
            "(SELECT count(*) FROM jobs j WHERE j.run_id = r.run_id AND j.status = 'ok') AS jobs_ok, "
            "(SELECT group_concat(DISTINCT coalesce(j.labels, '?' || coalesce(j.simulated, 0) || '|' || "
            "coalesce(j.execution, ''))) FROM jobs j WHERE j.run_id = r.run_id) AS labels FROM runs r")
        out = {}
        for r in rows:
            row = dict(r)
            row["labels"] = {name for part in (row["labels"] or "").split(",") if part
                             for name in _labels_of(part)}
            out[row["run_id"]] = row
        return out

    def query(self, sql: str, params: tuple = ()) -> list[sqlite3.Row]:
        self._db.row_factory = sqlite3.Row
        try:
            with self._guard():
                return list(self._db.execute(sql, params))
        finally:
            self._db.row_factory = None

    def close(self) -> None:
        self._db.close()


def remove_index(path: Path) -> None:
    """Delete an index file with its WAL and shared-memory files."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{path}{suffix}")

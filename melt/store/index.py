"""SQLite index of every run and job, for history queries.

The folders are the truth; the index can be rebuilt from them
(``melt results reindex``).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from pathlib import Path
from typing import Any, Iterator

from melt.errors import ResultsError
from melt.labels import SIMULATED, job_labels, labels_text

_DDL = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, created_at TEXT, finished_at TEXT, status TEXT,
    experiment TEXT, melt_version TEXT, path TEXT
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
CREATE INDEX IF NOT EXISTS jobs_cell ON jobs (cell_id);
CREATE INDEX IF NOT EXISTS metrics_name ON metrics (name);
"""


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
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
            for column in ("execution", "labels"):  # an index written before the column existed
                if column not in columns:
                    with self._db:
                        self._db.execute(f"ALTER TABLE jobs ADD COLUMN {column} TEXT")

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
                "INSERT OR REPLACE INTO runs VALUES (?,?,?,?,?,?,?)",
                (
                    manifest["run_id"],
                    manifest.get("created_at"),
                    manifest.get("finished_at"),
                    manifest.get("status"),
                    (manifest.get("experiment") or {}).get("name"),
                    manifest.get("melt_version"),
                    str(Path(run_dir).resolve()),
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

"""Run folders on disk: one folder per run, one sub-folder per job.

::

    results/
      melt.db                      SQLite index of every run and job
      20261122-193000-a1b2/
        manifest.json              schema_version, experiment, host, status
        journal.jsonl              one line per finished job, in order
        jobs/<job_id>/result.json  the job record (metrics, provenance, ...)
        jobs/<job_id>/stdout.txt   raw output of the inference process
        jobs/<job_id>/stderr.txt
        jobs/<job_id>/*.parquet    traces, when telemetry ran

Everything is written atomically; the journal is append-only and a torn last
line is ignored, so a crash at any moment leaves a loadable run.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from melt import __version__
from melt.errors import ResultsError, UnsafePathError
from melt.store.atomic import append_line, atomic_write_bytes, atomic_write_json, read_json_lines
from melt.store.index import RUN_ROW_VERSION, Index, remove_index
from melt.store.paths import job_file, job_folder
from melt.store.schema import JOB_FIELDS, SCHEMA_VERSION, upgrade_manifest


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def new_run_id() -> str:
    """Sortable and unique: ``YYYYmmdd-HHMMSS-xxxx`` (UTC)."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(2)


class Run:
    """One run folder."""

    def __init__(self, store: "ResultsStore", run_dir: Path, manifest: dict[str, Any]):
        self.store = store
        self.dir = run_dir
        self.manifest = manifest

    @property
    def run_id(self) -> str:
        return self.manifest["run_id"]

    def job_dir(self, job_id: str) -> Path:
        """The folder of one job; an id that is not one melt makes is refused (:func:`job_folder`)."""
        return job_folder(self.dir / "jobs", job_id)

    def journal(self) -> dict[str, dict]:
        """Last journal entry per job id."""
        return {e["job_id"]: e for e in read_json_lines(self.dir / "journal.jsonl") if "job_id" in e}

    def save_job(self, record: dict[str, Any], files: dict[str, bytes] | None = None) -> None:
        """Store a finished job: its files, its record, a journal line, its index rows.

        The record's ``job_id`` names its folder and ``files`` its file names,
        and both may come from another host: every name is checked
        (:func:`~melt.store.paths.job_folder`, :func:`~melt.store.paths.job_file`)
        before anything is written, so a refused record writes nothing.
        Raises :class:`~melt.errors.UnsafePathError` or
        :class:`~melt.errors.OutputTooLargeError`.
        """
        job_dir = self.job_dir(record.get("job_id"))
        checked = [(job_file(job_dir, name, len(data)), data) for name, data in (files or {}).items()]
        if job_dir.exists() and not job_dir.is_dir():
            raise UnsafePathError(f"refused to write in {job_dir}: it is not a folder")
        for path, data in checked:
            atomic_write_bytes(path, data)
        ordered = {k: record.get(k) for k in JOB_FIELDS}
        ordered.update({k: v for k, v in record.items() if k not in ordered})
        atomic_write_json(job_dir / "result.json", ordered)
        append_line(
            self.dir / "journal.jsonl",
            json.dumps({"job_id": record["job_id"], "status": record["status"], "at": utc_now()}),
        )
        self.store.index.add_job(self.run_id, ordered)

    def job_record(self, job_id: str) -> dict[str, Any] | None:
        """The stored record of one job, or ``None`` when it has none (or it is unreadable)."""
        try:
            return json.loads((self.job_dir(job_id) / "result.json").read_text(encoding="utf-8"))
        except (OSError, ValueError, UnsafePathError):
            return None

    def jobs(self) -> list[dict[str, Any]]:
        """Job records in the order they finished (last attempt of each).

        A job journaled whose record was lost is treated as not run.
        """
        return [r for r in map(self.job_record, self.journal()) if r is not None]

    def update(self, **fields: Any) -> None:
        self.manifest.update(fields)
        atomic_write_json(self.dir / "manifest.json", self.manifest)
        self.store.index.add_run(self.manifest, self.dir)

    def as_dict(self) -> dict[str, Any]:
        """The stable ``melt results show --json`` shape."""
        return {
            "run_id": self.run_id,
            "schema_version": SCHEMA_VERSION,
            "experiment": self.manifest.get("experiment", {}).get("name"),
            "status": self.manifest.get("status"),
            "created_at": self.manifest.get("created_at"),
            "finished_at": self.manifest.get("finished_at"),
            "melt_version": self.manifest.get("melt_version"),
            # why the run stopped part-way, when it did (cleared by a resume)
            **({"error": self.manifest["error"]} if self.manifest.get("error") else {}),
            # device settings melt changed and could not put back, each with its by-hand fix
            "restore_failures": self.manifest.get("restore_failures", []),
            "jobs": self.jobs(),
        }


class ResultsStore:
    """All runs under one results folder, with their SQLite index."""

    def __init__(self, root: Path | str):
        self.root = Path(root)
        self._index: Index | None = None
        #: (run id, reason) of the runs the last :meth:`runs` call could not read
        self.unreadable: list[tuple[str, str]] = []

    @property
    def index(self) -> Index:
        if self._index is None:
            self.root.mkdir(parents=True, exist_ok=True)
            self._index = Index(self.root / "melt.db")
        return self._index

    def create_run(self, experiment: dict[str, Any], *, experiment_path: str | None, host: dict) -> Run:
        run_id = new_run_id()
        run_dir = self.root / run_id
        (run_dir / "jobs").mkdir(parents=True)
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "run_id": run_id,
            "melt_version": __version__,
            "created_at": utc_now(),
            "finished_at": None,
            "status": "running",
            "experiment_path": experiment_path,
            "experiment": experiment,
            "host": host,
        }
        run = Run(self, run_dir, manifest)
        run.update()
        return run

    def run_ids(self) -> list[str]:
        """Run ids on disk, oldest first (by creation time, then id)."""
        return [run_id for run_id, _ in self._listing()]

    def _listing(self) -> list[tuple[str, dict[str, Any] | None]]:
        """``(run id, index row or None)`` of every run folder on disk, oldest first.

        The creation time comes from the index (:meth:`Index.run_rows`), so the
        manifests are not read; a folder the index does not hold, or holds in an
        older row shape, is read from its files and indexed now. A damaged or
        busy index is not used: every manifest is read, as before it existed.
        """
        if not self.root.is_dir():
            return []
        names = [p.name for p in self.root.iterdir() if (p / "manifest.json").is_file()]
        rows: dict[str, dict[str, Any]] = {}
        try:
            rows = self.index.run_rows()
        except ResultsError:
            pass
        else:
            stale = [n for n in names if n not in rows or rows[n].get("row_version") != RUN_ROW_VERSION]
            if stale:
                self._index_folders(stale)
                with contextlib.suppress(ResultsError):
                    rows = self.index.run_rows()

        def created(name: str) -> tuple[str, str]:
            if name in rows and rows[name].get("row_version") == RUN_ROW_VERSION:
                return (rows[name].get("created_at") or "", name)
            try:
                return (json.loads((self.root / name / "manifest.json").read_text(encoding="utf-8"))
                        .get("created_at") or "", name)
            except (OSError, ValueError):
                return ("", name)

        keys = {n: created(n) for n in names}
        return [(n, rows.get(n) if rows.get(n, {}).get("row_version") == RUN_ROW_VERSION else None)
                for n in sorted(names, key=keys.__getitem__)]

    def _index_folders(self, names: list[str]) -> None:
        """Index run folders the index lacks (copied in, or written before it had a field):
        each run's manifest, and the records of its jobs the index lacks or holds without
        their labels. An unreadable folder is skipped here (:meth:`runs` reports it)."""
        for name in names:
            try:
                run = self._open_folder(self.root / name)
                known = {r["job_id"] for r in self.index.query(
                    "SELECT job_id FROM jobs WHERE run_id = ? AND labels IS NOT NULL", (run.run_id,))}
                self.index.add_run(run.manifest, run.dir)
                for job_id in run.journal():
                    if job_id not in known and (job := run.job_record(job_id)) is not None:
                        self.index.add_job(run.run_id, job)
            except (ResultsError, UnsafePathError, KeyError, TypeError):
                continue

    def run_summaries(self) -> list[dict[str, Any]]:
        """One row per run, oldest first, for ``melt results list``: ``run_id``,
        ``experiment``, ``created_at``, ``status``, ``jobs_ok``, ``jobs_total``, ``labels``
        (every label among its jobs), ``path``.

        Read from the index in one query; a run the index lacks is indexed from
        its files first. With a damaged index each run's files are read.
        Unreadable runs are in :attr:`unreadable` afterwards.
        """
        from melt.labels import job_labels, labels_text

        out = []
        self.unreadable = []
        for run_id, row in self._listing():
            if row is None:  # no usable index: the folder is the truth
                try:
                    run = self.open_run(run_id)
                except ResultsError as exc:
                    self.unreadable.append((run_id, str(exc)))
                    continue
                journal = run.journal()
                row = {"experiment": (run.manifest.get("experiment") or {}).get("name"),
                       "created_at": run.manifest.get("created_at"), "status": run.manifest.get("status"),
                       "jobs_ok": sum(1 for e in journal.values() if e.get("status") == "ok"),
                       "total_jobs": run.manifest.get("total_jobs"),
                       "labels": {name for job in run.jobs() for name in job_labels(job)}}
            out.append({
                "run_id": run_id, "experiment": row["experiment"], "created_at": row["created_at"],
                "status": row["status"], "jobs_ok": int(row["jobs_ok"] or 0), "jobs_total": row["total_jobs"],
                "labels": [w for w in labels_text(row["labels"], ",").split(",") if w],
                "path": str(self.root / run_id),
            })
        return out

    def resolve(self, ref: str) -> str:
        """A run id from ``ref``: an id, a unique prefix, ``latest``, or a run folder path."""
        p = Path(ref)
        if (p / "manifest.json").is_file():
            return p.resolve().name if p.resolve().parent == self.root.resolve() else str(p)
        if p.name == ref and ref not in ("", ".", "..", "latest") and (self.root / ref / "manifest.json").is_file():
            return ref  # a whole id: the folders need not be listed
        ids = self.run_ids()
        if ref == "latest" and ids:
            return ids[-1]
        if ref in ids:
            return ref
        matches = [i for i in ids if i.startswith(ref)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise ResultsError(f"run id '{ref}' is ambiguous: {', '.join(matches[:5])}")
        raise ResultsError(f"no run '{ref}' in {self.root}/ (see `melt results list`)")

    def open_run(self, ref: str) -> Run:
        run_id = self.resolve(ref)
        return self._open_folder(Path(run_id) if os.sep in run_id else self.root / run_id)

    def _open_folder(self, run_dir: Path) -> Run:
        source = str(run_dir / "manifest.json")
        try:
            manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ResultsError(f"{source}: missing") from None
        except ValueError as exc:
            raise ResultsError(f"{source}: not valid JSON ({exc})") from None
        manifest = upgrade_manifest(manifest, source)
        store = self if run_dir.parent.resolve() == self.root.resolve() else ResultsStore(run_dir.parent)
        return Run(store, run_dir, manifest)

    def runs(self) -> list[Run]:
        """Every readable run, oldest first."""
        out = []
        self.unreadable = []
        for run_id in self.run_ids():
            try:
                out.append(self.open_run(run_id))
            except ResultsError as exc:
                self.unreadable.append((run_id, str(exc)))
        return out

    def reindex(self, runs: Iterable[Run] | None = None) -> int:
        """Index runs (default: rebuild the whole index from the folders); returns the job count.

        A full rebuild writes a new file beside the old one and replaces it, so
        a damaged ``melt.db`` is never read.
        """
        if runs is not None:
            n = 0
            for run in runs:
                self.index.add_run(run.manifest, run.dir)
                for job in run.jobs():
                    self.index.add_job(run.run_id, job)
                    n += 1
            return n
        self.root.mkdir(parents=True, exist_ok=True)
        final, fresh_path = self.root / "melt.db", self.root / f".melt.db.{os.getpid()}.new"
        remove_index(fresh_path)
        fresh, n = Index(fresh_path), 0
        try:
            for run in self.runs():
                fresh.add_run(run.manifest, run.dir)
                for job in run.jobs():
                    fresh.add_job(run.run_id, job)
                    n += 1
            fresh._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            fresh._db.execute("PRAGMA journal_mode=DELETE")
        finally:
            fresh.close()
        if self._index is not None:
            self._index.close()
            self._index = None
        remove_index(final)
        os.replace(fresh_path, final)
        return n

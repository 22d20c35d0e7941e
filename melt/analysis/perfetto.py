"""Jobs' telemetry and phases as a Chrome/Perfetto trace (the Trace Event Format's JSON form).

The file opens in Perfetto's UI ("Open trace file") and in the trace viewer
of Chrome builds that still ship ``chrome://tracing``; both read the JSON
object form of Google's *Trace Event Format* document::

    {"traceEvents": [...], "displayTimeUnit": "ms", "otherData": {...}}

What a file holds
    One process per job (``pid`` 1, 2, ... in export order), named like the
    report's trace titles: ``device · model · workload · rep N``, with the
    job's labels in parentheses (``(simulated, emulated)``) and the run and
    job ids as its process labels. In each process:

    - thread 1 ``phases``: a complete event (``ph: "X"``) per phase window
      (idle, load, prefill, decode, run, serve; a bench job has a window per
      llama-bench repetition), its ``args`` the phase's ``source``;
    - thread 2 ``throttled``: one per throttled interval;
    - thread 3 ``turns``: one per conversation turn, with its token counts
      and timings as ``args``;
    - a counter track (``ph: "C"``) per trace channel, named as the column
      of ``trace.parquet`` (unit in the name: ``power_w``,
      ``temp_skin_c``), one event per reading with ``args: {"value": x}``.
      Ticks where a channel was not read (NaN in the parquet: slow channels
      are read every few ticks) are left out, never written as a number, so
      the track holds its last reading until the next one.

Timebase
    The device's clock as stored: ``ts`` is ``t_s`` (and a phase's
    ``start_s``) in microseconds, counted from the job's start mark. Each
    job's clock starts at its own mark, so the processes of one file share no
    time origin: they are laid over one another from 0, for comparing shapes,
    not wall times. ``otherData.clock`` says ``device``.

Everything comes from stored records and traces, which may come from another
host: only finite numbers are written, channel names are bounded, windows
whose end precedes their start are dropped.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Sequence, TextIO

import numpy as np
import pandas as pd

from melt import __version__
from melt.analysis.frames import TRACE_FILE, read_trace
from melt.errors import ResultsError, UnsafePathError
from melt.labels import job_labels, labels_text

#: Thread ids of the slice tracks in each job's process.
PHASES_TID, THROTTLED_TID, TURNS_TID = 1, 2, 3
_THREADS = ((PHASES_TID, "phases"), (THROTTLED_TID, "throttled"), (TURNS_TID, "turns"))

#: A channel is a trace column named like melt names them (letters, digits, ``_``), at most this long.
_CHANNEL = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,99}")
_TEXT_MAX = 200  # characters of any name taken from a record
_TURN_ARGS = ("conversation", "turn", "context_tokens", "prompt_tokens", "cached_tokens", "gen_tokens",
              "ttft_ms", "prefill_tps", "decode_tps", "energy_j")


@dataclass(frozen=True)
class TraceJob:
    """One job to export: its run id, its record and its samples (``None``: no trace file).

    ``load``, when given, reads the samples when the job is written (one
    job's samples in memory at a time) instead of ``samples``.
    """

    run_id: str
    record: dict[str, Any]
    samples: pd.DataFrame | None = None
    load: Callable[[], pd.DataFrame | None] | None = None

    def frame(self) -> pd.DataFrame | None:
        """The job's samples."""
        return self.load() if self.load is not None else self.samples


def _text(value: Any) -> str:
    return str(value if value is not None else "")[:_TEXT_MAX]


def _finite(value: Any) -> float | int | None:
    """``value`` when it is a finite number (an int stays an int), else ``None``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, int):
        return value if abs(value) < 2 ** 53 else None  # JSON readers hold numbers as doubles
    return value if math.isfinite(value) else None


def _us(seconds: float) -> float:
    """Seconds -> microseconds, kept to the nanosecond."""
    return round(seconds * 1e6, 3)


def _dur(start: float, end: float) -> float:
    """A window's length in microseconds, such that ``ts + dur`` is its end as written."""
    return round(_us(end) - _us(start), 3)


def process_name(record: dict[str, Any]) -> str:
    """``virtual-phone · gemma3-270m · bench · rep 0 (simulated)``: the job as the report names it."""
    name = " · ".join(_text(record.get(k)) for k in ("device", "model", "workload"))
    name += f" · rep {_text(record.get('repetition'))}"
    labels = labels_text(job_labels(record))
    return f"{name} ({labels})" if labels else name


def _windows(items: Any) -> Iterator[tuple[dict[str, Any], float, float]]:
    """``(item, start_s, end_s)`` of each well-formed window in a record's list.

    Well-formed: both edges finite numbers, the end not before the start,
    and its edges and length finite in microseconds too.
    """
    for item in items if isinstance(items, list) else ():
        if not isinstance(item, dict):
            continue
        start, end = _finite(item.get("start_s")), _finite(item.get("end_s"))
        if start is not None and end is not None and end >= start and math.isfinite(_dur(start, end)):
            yield item, start, end


def slice_events(record: dict[str, Any], pid: int) -> list[dict[str, Any]]:
    """Complete events (``ph: "X"``) of a record's phases, throttled intervals and turns, by time."""
    out = []
    for phase, start, end in _windows(record.get("phases")):
        out.append({"name": _text(phase.get("name")) or "phase", "cat": "phase", "ph": "X",
                    "ts": _us(start), "dur": _dur(start, end), "pid": pid, "tid": PHASES_TID,
                    "args": {"source": _text(phase.get("source"))}})
    for _, start, end in _windows(record.get("throttled_intervals")):
        out.append({"name": "throttled", "cat": "throttled", "ph": "X", "ts": _us(start),
                    "dur": _dur(start, end), "pid": pid, "tid": THROTTLED_TID, "args": {}})
    for turn, start, end in _windows(record.get("turns")):
        args = {k: v for k in _TURN_ARGS if (v := _finite(turn.get(k))) is not None}
        out.append({"name": f"turn {_text(turn.get('turn'))}", "cat": "turn", "ph": "X",
                    "ts": _us(start), "dur": _dur(start, end), "pid": pid, "tid": TURNS_TID,
                    "args": args})
    out.sort(key=lambda e: (e["tid"], e["ts"]))
    return out


def channels(samples: pd.DataFrame) -> list[str]:
    """The trace's channel columns that are exported: numeric, named as melt names them, once, not ``t_s``."""
    twice = set(samples.columns[samples.columns.duplicated()])  # which of two is the channel: neither
    return [str(c) for c in samples.columns
            if c != "t_s" and isinstance(c, str) and c not in twice and _CHANNEL.fullmatch(c)
            and pd.api.types.is_numeric_dtype(samples[c]) and not pd.api.types.is_bool_dtype(samples[c])]


def counter_events(samples: pd.DataFrame, pid: int) -> Iterator[dict[str, Any]]:
    """Counter events (``ph: "C"``): each channel's finite readings, in time order.

    Rows without a finite ``t_s`` are dropped; rows are ordered by ``t_s``
    (stable), so every counter track's ``ts`` never goes back.
    """
    if "t_s" not in samples.columns:
        return
    with np.errstate(over="ignore", invalid="ignore"):
        t = pd.to_numeric(samples["t_s"], errors="coerce").to_numpy(dtype=float)
        keep = np.isfinite(t * 1e6)  # a time that is no number, or none in microseconds
    order = np.argsort(t[keep], kind="stable")
    ts = t[keep][order]
    for name in channels(samples):
        values = samples[name].to_numpy(dtype=float)[keep][order]
        ok = np.isfinite(values)
        for when, value in zip(ts[ok].tolist(), values[ok].tolist()):
            yield {"name": name, "ph": "C", "ts": _us(when), "pid": pid, "args": {"value": value}}


def metadata_events(job: TraceJob, pid: int, tids: Iterable[int] = ()) -> list[dict[str, Any]]:
    """Metadata events (``ph: "M"``): the process's name, labels and order, and the names of threads ``tids``."""
    rec = job.record
    meta = [
        {"name": "process_name", "ph": "M", "pid": pid, "tid": 0, "args": {"name": process_name(rec)}},
        {"name": "process_labels", "ph": "M", "pid": pid, "tid": 0,
         "args": {"labels": f"run {_text(job.run_id)}, job {_text(rec.get('job_id'))}"}},
        {"name": "process_sort_index", "ph": "M", "pid": pid, "tid": 0, "args": {"sort_index": pid}},
    ]
    used = set(tids)
    for tid, name in _THREADS:
        if tid in used:
            meta.append({"name": "thread_name", "ph": "M", "pid": pid, "tid": tid, "args": {"name": name}})
    return meta


def job_events(job: TraceJob, pid: int) -> Iterator[dict[str, Any]]:
    """Every event of one job's process: metadata, slices, then counters."""
    slices = slice_events(job.record, pid)
    yield from metadata_events(job, pid, {e["tid"] for e in slices})
    yield from slices
    samples = job.frame()
    if samples is not None:
        yield from counter_events(samples, pid)


def other_data(jobs: Sequence[TraceJob]) -> dict[str, str]:
    """The file's ``otherData``: what its timebase is and what wrote it (strings only)."""
    return {
        "clock": "device",
        "clock_detail": "ts is microseconds on each job's device clock from that job's start mark; "
                        "processes (jobs) share no time origin",
        "generator": f"melt {__version__}",
        "runs": ", ".join(dict.fromkeys(j.run_id for j in jobs)),
        "jobs": str(len(jobs)),
    }


def write_trace(jobs: Sequence[TraceJob], out: TextIO) -> int:
    """Write the trace of ``jobs`` (one process each) to ``out``; returns the number of events.

    Events are written one at a time, so a long trace is never held as one
    string. Raises ``ValueError`` only if a non-finite number slipped through
    (it never should: they are left out).
    """
    out.write('{"displayTimeUnit": "ms", "otherData": ')
    out.write(json.dumps(other_data(jobs), ensure_ascii=False))
    out.write(', "traceEvents": [')
    n = 0
    for pid, job in enumerate(jobs, start=1):
        for event in job_events(job, pid):
            out.write(("," if n else "") + "\n" + json.dumps(event, ensure_ascii=False, allow_nan=False,
                                                             separators=(",", ":")))
            n += 1
    out.write("\n]}\n")
    return n


def trace_dict(jobs: Sequence[TraceJob]) -> dict[str, Any]:
    """The trace of ``jobs`` as one dict (for tests and small exports)."""
    events = [e for pid, job in enumerate(jobs, start=1) for e in job_events(job, pid)]
    return {"displayTimeUnit": "ms", "otherData": other_data(jobs), "traceEvents": events}


def has_telemetry(run: Any, record: dict[str, Any]) -> bool:
    """A job has something to draw: a trace file or phase windows."""
    try:
        trace = (run.job_dir(str(record.get("job_id"))) / TRACE_FILE).is_file()
    except UnsafePathError:  # an id melt did not make: no folder to read
        trace = False
    return trace or any(True for _ in _windows(record.get("phases")))


def trace_jobs(runs: Iterable[Any], job: str | None = None) -> list[TraceJob]:
    """The jobs of stored runs (:class:`melt.store.runs.Run`) that have telemetry, with their samples.

    ``job``: only the job with this id (or unique id prefix). Raises
    :class:`~melt.errors.ResultsError` when ``job`` matches no job with
    telemetry, or more than one, or when no job has telemetry at all.
    """
    runs = list(runs)
    found = [(run, rec) for run in runs for rec in run.jobs() if has_telemetry(run, rec)]
    where = ", ".join(r.run_id for r in runs)
    if job is not None:
        exact = [(r, rec) for r, rec in found if str(rec.get("job_id")) == job]
        found = exact or [(r, rec) for r, rec in found if str(rec.get("job_id")).startswith(job)]
        if not found:
            raise ResultsError(f"no job {job!r} with telemetry in {where}")
        if len({(r.run_id, rec.get("job_id")) for r, rec in found}) > 1:
            ids = sorted({f"{r.run_id}/{rec.get('job_id')}" for r, rec in found})
            raise ResultsError(f"job {job!r} matches {len(ids)} jobs: {', '.join(ids[:5])}"
                               + (" ..." if len(ids) > 5 else ""))
    if not found:
        raise ResultsError(f"nothing to export: no job with telemetry in {where}")
    return [TraceJob(run.run_id, rec, load=lambda run=run, rec=rec: _samples(run, rec)) for run, rec in found]


def _samples(run: Any, record: dict[str, Any]) -> pd.DataFrame | None:
    try:
        return read_trace(run, str(record.get("job_id")))
    except UnsafePathError:  # an id melt did not make: it has no folder to read
        return None


def job_file_name(run_id: str, job_id: str) -> str:
    """``<run_id>-<job_id>.json``, with anything but letters, digits, ``_`` and ``-`` replaced by ``_``."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", f"{run_id}-{job_id}")[:200] + ".json"


def write_job_file(run: Any, record: dict[str, Any], path: Any) -> int:
    """Write one job's trace (a file of its own) to ``path``; returns the number of events.

    Raises ``OSError`` when the file cannot be written.
    """
    job = TraceJob(run.run_id, record, load=lambda: _samples(run, record))
    with open(path, "w", encoding="utf-8") as f:
        return write_trace([job], f)

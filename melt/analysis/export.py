"""Export bench jobs as llama-bench's own ``-o json``, ``-o jsonl`` and ``-o sql`` output.

llama.cpp's ``scripts/compare-llama-bench.py`` (and any script written for
llama-bench's files) reads these exports unchanged.

Where the rows come from
    A melt bench job is one ``llama-bench -o jsonl`` process; its stdout is
    stored beside the record (``jobs/<job_id>/stdout.txt``). The export hands
    on the test objects that process printed, as printed: every field, its
    name, its JSON type, ``samples_ns`` and ``samples_ts`` (one per timed run
    inside the process, ``-r``). ``cpu_info``, ``model_type``,
    ``build_commit`` ... are llama-bench's, not melt's. Runs from before the
    driver printed JSON (or whose stdout is lost) fall back to a row rebuilt
    from the record: see *Reconstructed rows*.

Repetitions
    melt's repetitions of a cell are separate jobs, that is separate
    llama-bench processes. Each exports its own rows, with the same key
    fields: exactly what appending the output of several ``llama-bench -o
    jsonl`` runs to one file gives. They are not merged into one row, because
    a merged row's ``avg_ts`` and ``stddev_ts`` would be melt's numbers, not
    llama-bench's. compare-llama-bench.py averages ``avg_ts`` over the rows
    with equal keys, unweighted by ``-r`` (as it says it does for
    llama-bench's own files).

melt's additions (llama-bench has no field for them)
    ``melt_run_id``, ``melt_job_id``, ``melt_device`` (the device's name in
    melt: two phones with one SoC print the same ``cpu_info``),
    ``melt_repetition``, ``melt_simulated``, ``melt_emulated``,
    ``melt_stand_in`` (numbers from a virtual device, an instruction-set
    emulator, a stand-in framework), ``melt_labels`` (the same in words,
    comma-separated: :func:`melt.labels.job_labels`) and
    ``melt_reconstructed`` (empty for rows llama-bench printed; else the
    comma-separated names of the fields melt filled in). The comparison
    script ignores them.

Reconstructed rows
    From a record's metrics (``prefill_tps`` -> a ``pp<n_prompt>`` row,
    ``decode_tps`` -> ``tg<n_gen>``), params, build and model provenance, in
    the field set of the llama-bench melt builds (:data:`FIELDS`). Fields that
    were not run-specific get llama-bench's printed defaults; the ones melt
    had to infer are named in ``melt_reconstructed``: always ``avg_ns`` and
    ``stddev_ns`` (from tokens/s: the mean of ns is not n/mean of t/s),
    ``model_type`` (llama.cpp's own description is not stored),
    ``model_size`` (the file's size, llama-bench counts tensor bytes),
    ``cpu_info`` (the device's CPU model, or its melt name when unknown),
    ``test_time`` (the job's start), and any of ``build_commit``,
    ``build_number``, ``model_filename``, ``model_n_params``, ``n_threads``
    that the record did not hold, and ``stddev_ts`` when the job timed more
    than one run but the record kept no spread. ``samples_ns``/``samples_ts`` are left out:
    the record keeps only the mean and spread.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable

#: llama-bench's fields in the llama.cpp melt builds, in its order, with their
#: types (``test::get_field_type``: str, bool, int or float).
FIELDS: tuple[tuple[str, str], ...] = (
    ("build_commit", "str"), ("build_number", "int"), ("cpu_info", "str"), ("gpu_info", "str"),
    ("backends", "str"), ("model_filename", "str"), ("model_type", "str"), ("model_size", "int"),
    ("model_n_params", "int"), ("n_batch", "int"), ("n_ubatch", "int"), ("n_threads", "int"),
    ("cpu_mask", "str"), ("cpu_strict", "bool"), ("poll", "int"), ("type_k", "str"),
    ("type_v", "str"), ("n_gpu_layers", "int"), ("n_cpu_moe", "int"), ("split_mode", "str"),
    ("main_gpu", "int"), ("no_kv_offload", "bool"), ("flash_attn", "int"), ("devices", "str"),
    ("tensor_split", "str"), ("tensor_buft_overrides", "str"), ("load_mode", "str"),
    ("lazy_mode", "str"), ("embeddings", "bool"), ("no_op_offload", "int"), ("no_host", "bool"),
    ("repack", "bool"), ("fit_target", "int"), ("fit_min_ctx", "int"), ("n_prompt", "int"),
    ("n_gen", "int"), ("n_depth", "int"), ("test_time", "str"), ("avg_ns", "int"),
    ("stddev_ns", "int"), ("avg_ts", "float"), ("stddev_ts", "float"),
)

#: What that llama-bench prints for the fields melt never sets (read from a
#: real ``llama-bench -o jsonl`` run on a CPU build).
DEFAULTS: dict[str, Any] = {
    "gpu_info": "", "backends": "CPU", "n_batch": 2048, "n_ubatch": 512, "cpu_mask": "0x0",
    "cpu_strict": False, "poll": 50, "type_k": "f16", "type_v": "f16", "n_gpu_layers": -1,
    "n_cpu_moe": 0, "split_mode": "layer", "main_gpu": 0, "no_kv_offload": False,
    "flash_attn": -1, "devices": "auto", "tensor_split": "0.00", "tensor_buft_overrides": "none",
    "load_mode": "auto", "lazy_mode": "auto", "embeddings": False, "no_op_offload": 0,
    "no_host": False, "repack": True, "fit_target": 0, "fit_min_ctx": 0, "n_depth": 0,
}

#: melt's own fields, after llama-bench's (see the module docstring).
MELT_FIELDS: tuple[tuple[str, str], ...] = (
    ("melt_run_id", "str"), ("melt_job_id", "str"), ("melt_device", "str"),
    ("melt_repetition", "int"), ("melt_simulated", "bool"), ("melt_emulated", "bool"),
    ("melt_stand_in", "bool"), ("melt_labels", "str"), ("melt_reconstructed", "str"),
)

#: Table name written by current llama-bench (older versions wrote ``test``).
TABLE = "llama_bench"

_TYPES = dict(FIELDS + MELT_FIELDS)
_SQL_TYPES = {"str": "TEXT", "bool": "INTEGER", "int": "INTEGER", "float": "REAL"}
_SAMPLES = ("samples_ns", "samples_ts")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class BenchJob:
    """One stored job: its record, its run and the stdout its process printed (``None``: not kept)."""

    record: dict[str, Any]
    run_id: str = ""
    stdout: str | None = None


def _exported(record: dict[str, Any]) -> bool:
    return record.get("status") == "ok" and record.get("kind") == "bench"


def bench_jobs(runs: Iterable[Any]) -> list[BenchJob]:
    """The jobs of stored runs (:class:`melt.store.runs.Run`) with their stdout."""
    out = []
    for run in runs:
        for record in run.jobs():
            stdout: str | None = None
            if _exported(record):
                try:
                    stdout = (run.job_dir(str(record.get("job_id"))) / "stdout.txt").read_text(
                        encoding="utf-8", errors="replace")
                except OSError:
                    pass
            out.append(BenchJob(record, run.run_id, stdout))
    return out


def _melt_fields(job: BenchJob, reconstructed: list[str]) -> dict[str, Any]:
    from melt.labels import EMULATED, SIMULATED, STAND_IN, job_labels, labels_text

    rec = job.record
    rep = rec.get("repetition")
    labels = job_labels(rec)
    return {
        "melt_run_id": job.run_id,
        "melt_job_id": str(rec.get("job_id") or ""),
        "melt_device": str(rec.get("device") or ""),
        "melt_repetition": int(rep) if isinstance(rep, int) and not isinstance(rep, bool) else None,
        "melt_simulated": SIMULATED in labels,
        "melt_emulated": EMULATED in labels,
        "melt_stand_in": STAND_IN in labels,
        "melt_labels": labels_text(labels, ","),
        "melt_reconstructed": ",".join(reconstructed),
    }


def _model_path_in_command(command: Any) -> str | None:
    """The ``-m`` argument of the first command melt ran (what llama-bench printed as model_filename)."""
    try:
        argv = shlex.split(str(command or "").split(" ; ")[0])
    except ValueError:
        return None
    for flag, value in zip(argv, argv[1:]):
        if flag in ("-m", "--model"):
            return value
    return None


def _test_time(started: Any) -> str:
    try:
        t = datetime.fromisoformat(str(started).replace("Z", "+00:00"))
    except ValueError:
        return ""
    if t.tzinfo is not None:
        t = t.astimezone(timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _cpu_info(rec: dict[str, Any]) -> str:
    props = (rec.get("provenance") or {}).get("device") or {}
    if isinstance(props, dict):
        for key in ("cpu_model", "soc", "hardware"):
            if props.get(key):
                return str(props[key])
    return str(rec.get("device") or "")


def _reconstructed_rows(job: BenchJob) -> list[dict[str, Any]]:
    """pp and tg rows rebuilt from a record whose stdout holds no llama-bench JSON."""
    rec = job.record
    prov = rec.get("provenance") or {}
    build = prov.get("framework_build") or {}
    model = prov.get("model") or {}
    params = rec.get("params") or {}
    metrics = rec.get("metrics") or {}
    guessed = ["cpu_info", "model_type", "model_size", "test_time", "avg_ns", "stddev_ns"]

    def known(name: str, value: Any, fallback: Any) -> Any:
        if value is None or value == "" or (isinstance(fallback, int) and _int(value, -1) < 0):
            guessed.append(name)
            return fallback
        return value

    commit = build.get("build_commit") or (build.get("llama_cpp_commit") or "")[:8] or None
    number = (build.get("cmake_flags") or {}).get("LLAMA_BUILD_NUMBER")
    base = dict(DEFAULTS)
    base.update({
        "build_commit": str(known("build_commit", commit, "unknown")),
        "build_number": _int(known("build_number", number, 0)),
        "cpu_info": _cpu_info(rec),
        "model_filename": str(known("model_filename", _model_path_in_command(prov.get("command")),
                                    model.get("path") or rec.get("model") or "")),
        "model_type": " ".join(str(x) for x in (model.get("architecture") or rec.get("model"),
                                                model.get("quantization")) if x),
        "model_size": _int(model.get("size_bytes")),
        "model_n_params": _int(known("model_n_params", model.get("n_params"), 0)),
        "n_threads": _int(known("n_threads", params.get("threads"),
                                _int((prov.get("device") or {}).get("cpu_count")))),
        "n_depth": _int(params.get("depth")),
        "test_time": _test_time(rec.get("started_at")),
    })
    if _int(params.get("batch")) > 0:
        base["n_batch"] = _int(params["batch"])
    rows = []
    for metric, n_prompt, n_gen in (("prefill_tps", _int(params.get("n_prompt")), 0),
                                    ("decode_tps", 0, _int(params.get("n_gen")))):
        tps = metrics.get(metric)
        if not isinstance(tps, (int, float)) or not math.isfinite(tps) or tps <= 0 or n_prompt + n_gen <= 0:
            continue
        std = metrics.get(f"{metric}_stddev")
        inferred = list(guessed)
        if not (isinstance(std, (int, float)) and math.isfinite(std)):
            std = 0.0  # what llama-bench prints for one timed run
            if _int(params.get("repetitions"), 1) > 1:  # more than one, but the spread was not kept
                inferred.append("stddev_ts")
        ns_per_test = (n_prompt + n_gen) * 1e9
        row = dict(base, n_prompt=n_prompt, n_gen=n_gen,
                   avg_ns=int(round(ns_per_test / tps)),
                   stddev_ns=int(round(ns_per_test * std / tps ** 2)),  # first-order propagation
                   avg_ts=round(float(tps), 6), stddev_ts=round(std, 6))
        row = {name: row[name] for name, _ in FIELDS}
        row.update(_melt_fields(job, inferred))
        rows.append(row)
    return rows


def rows_for_job(job: BenchJob) -> list[dict[str, Any]]:
    """llama-bench rows of one job: as printed when its stdout holds them, else reconstructed.

    Jobs that are not ``ok`` bench jobs give no rows.
    """
    from melt.parsers.llama_bench import printed_rows

    if not _exported(job.record):
        return []
    printed = printed_rows(job.stdout) if job.stdout else []
    if not printed:
        return _reconstructed_rows(job)
    return [{**row, **_melt_fields(job, [])} for row in printed]


def llama_bench_rows(jobs: Iterable[BenchJob], *, build_commit: str | None = None) -> list[dict[str, Any]]:
    """llama-bench rows of every ok bench job, in order.

    ``build_commit``: ``None`` keeps llama-bench's value; ``"run"`` writes
    each row's run id instead (compare-llama-bench.py compares builds, so two
    runs of one build are told apart that way); any other text is written
    as is.
    """
    rows = []
    for job in jobs:
        for row in rows_for_job(job):
            if build_commit is not None:
                row["build_commit"] = job.run_id if build_commit == "run" else build_commit
            rows.append(row)
    return rows


def to_json(rows: list[dict[str, Any]]) -> str:
    """llama-bench ``-o json``: a JSON array of test objects."""
    return json.dumps(rows, indent=2, ensure_ascii=False) + "\n"


def to_jsonl(rows: list[dict[str, Any]]) -> str:
    """llama-bench ``-o jsonl``: one test object per line."""
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def _columns(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """SQL columns: llama-bench's known fields in its order, then any other it printed, then melt's.

    A printed field whose name is not a plain SQL identifier (:func:`sql_identifier`)
    is left out, as is a second name that differs from an earlier one only in case
    (SQLite treats them as one column).
    """
    seen: dict[str, Any] = {}
    folded: set[str] = set()
    for row in rows:
        for key, value in row.items():
            if key in _SAMPLES or key in seen or not _IDENT.fullmatch(str(key)) or key.lower() in folded:
                continue
            seen[key] = value
            folded.add(key.lower())
    if not rows:
        seen = {n: None for n, _ in FIELDS}
    names = ([n for n, _ in FIELDS if n in seen] + [n for n in seen if n not in _TYPES]
             + [n for n, _ in MELT_FIELDS])
    cols = []
    for name in names:
        typ = _TYPES.get(name)
        if typ is None:  # a field of another llama-bench version: typed by its JSON value
            v = seen[name]
            typ = ("bool" if isinstance(v, bool) else "int" if isinstance(v, int)
                   else "float" if isinstance(v, float) else "str")
        cols.append((name, _SQL_TYPES[typ]))
    return cols


def sql_identifier(name: str) -> str:
    """``name`` double-quoted for SQL; raises ``ValueError`` unless it matches ``[A-Za-z_][A-Za-z0-9_]*``."""
    if not _IDENT.fullmatch(name):
        raise ValueError(f"{name!r} is not a plain SQL identifier")
    return f'"{name}"'


def _sql_text(text: str) -> str:
    """A quoted SQL string literal that spans one line whatever ``text`` holds.

    Control characters go in as ``char(n)`` joined with ``||``, so no line of the
    export starts inside a string: the sqlite3 shell can never read a device's
    newline followed by ``.system ...`` as a dot-command. Lone surrogates (JSON
    allows them, UTF-8 does not) become U+FFFD.
    """
    parts: list[str] = []
    plain: list[str] = []
    for ch in text + "\n":  # the added newline flushes the last plain run and is not written
        code = ord(ch)
        if code < 0x20 or code == 0x7F:
            if plain:
                parts.append("'" + "".join(plain).replace("'", "''") + "'")
                plain = []
            parts.append(f"char({code})")
        else:
            plain.append("\ufffd" if 0xD800 <= code <= 0xDFFF else ch)
    parts.pop()
    if not parts:
        return "''"
    return " || ".join(parts)


def _sql_literal(value: Any) -> str:
    """A value as llama-bench's sql printer writes it: quoted text, booleans as 0/1."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        value = int(value)
    elif isinstance(value, float):
        value = f"{value:f}"
    elif not isinstance(value, (int, str)):
        value = json.dumps(value)
    return _sql_text(str(value))


def to_sql(rows: list[dict[str, Any]], table: str = TABLE) -> str:
    """llama-bench ``-o sql``: ``CREATE TABLE IF NOT EXISTS`` then one ``INSERT`` per row.

    Pipe it into ``sqlite3 llama-bench.sqlite``. Pass ``table="test"`` for
    scripts written before llama-bench renamed its table. The rows come from a
    device, so every name is checked and quoted and every value is a one-line
    literal: the output is data for the sqlite3 shell, never a command.
    Raises ``ValueError`` when ``table`` is not a plain identifier.
    """
    cols = _columns(rows)
    quoted = sql_identifier(table)
    out = [f"CREATE TABLE IF NOT EXISTS {quoted} (\n"
           + ",\n".join(f"  {sql_identifier(n)} {t}" for n, t in cols) + "\n);\n\n"]
    for r in rows:
        names = [n for n, _ in cols if n in r]
        out.append(f"INSERT INTO {quoted} ({', '.join(sql_identifier(n) for n in names)}) VALUES ("
                   + ", ".join(_sql_literal(r[n]) for n in names) + ");\n")
    return "".join(out)


def render(rows: list[dict[str, Any]], fmt: str) -> str:
    """Rows -> llama-bench output text in ``fmt`` (``json``, ``jsonl`` or ``sql``).

    Raises ``ValueError`` for another format.
    """
    if fmt == "json":
        return to_json(rows)
    if fmt == "jsonl":
        return to_jsonl(rows)
    if fmt == "sql":
        return to_sql(rows)
    raise ValueError(f"unknown llama-bench format {fmt!r}; use json, jsonl or sql")


def export_llama_bench(runs: Iterable[Any], fmt: str = "json", *, build_commit: str | None = None) -> str:
    """Stored runs -> llama-bench output text in ``fmt`` (``json``, ``jsonl`` or ``sql``).

    See :func:`llama_bench_rows` for ``build_commit``. Raises ``ValueError``
    for another format.
    """
    if fmt not in ("json", "jsonl", "sql"):
        raise ValueError(f"unknown llama-bench format {fmt!r}; use json, jsonl or sql")
    return render(llama_bench_rows(bench_jobs(runs), build_commit=build_commit), fmt)

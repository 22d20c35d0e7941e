"""llama-bench results (``llama-bench``), from any of its output formats.

``llama-bench -o md|csv|json|jsonl|sql`` all describe the same test rows; this
module reads every one of them (plus the ``build: <commit> (<number>)`` line
printed under the markdown table) and returns one record per test row:

``model``, ``model_size_bytes``, ``model_n_params``, ``backend``,
``n_threads``, ``n_gpu_layers``, ``n_prompt``, ``n_gen``, ``n_depth``,
``avg_tps``, ``stddev_tps``, ``build_commit``, ``build_number`` (when printed),
``samples_ns`` (json/jsonl only), and when present ``n_batch``, ``n_ubatch``,
``avg_ns``, ``stddev_ns``, ``model_filename``, ``cpu_info``, ``gpu_info``,
``test_time``. Markdown columns that have no canonical name go into ``extra``.

Column sets changed over the years: ``pp 512`` (old) / ``pp512`` /
``pp512 @ d512`` / ``tg128`` / ``pp512+tg128``; sizes in ``GiB``/``MiB``;
parameter counts in ``B``/``M``; compact tables without padding; old csv/sql
with ``cuda,opencl,metal,...`` flags instead of ``backends``. Rows whose field
count does not match the header are aligned from both ends (the numbers that
matter sit at the end of the row) instead of being dropped.

:func:`printed_rows` is the other reader: it returns llama-bench's own
``-o jsonl`` / ``-o json`` objects unchanged (every field, llama-bench's
names and types, ``samples_ns`` and ``samples_ts``), for exports that must
hand llama.cpp's scripts exactly what llama-bench printed.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from typing import Any, Iterator

from melt.parsers._num import clean, params_count, scaled, to_bool, to_float, to_int

_BUILD = re.compile(r"^\s*build:\s*([0-9a-f]{6,40})\s*\((\d+)\)", re.MULTILINE)
_TEST = re.compile(r"(?P<kind>pp|tg|pg)\s*(?P<n>\d+)", re.IGNORECASE)
_DEPTH = re.compile(r"@\s*d\s*(\d+)", re.IGNORECASE)
_TPS = re.compile(r"(?P<avg>\d+(?:[.,]\d+)?)\s*(?:±|\+-|\+/-)\s*(?P<std>\d+(?:[.,]\d+)?)")
_SIZE = re.compile(r"(?P<n>\d+(?:[.,]\d+)?)\s*(?P<u>[KMGT]i?B|B)\b", re.IGNORECASE)
_PARAMS = re.compile(r"(?P<n>\d+(?:[.,]\d+)?)\s*(?P<u>[KMBT]?)\s*$", re.IGNORECASE)
_OLD_BACKEND_FLAGS = ("cuda", "vulkan", "kompute", "metal", "sycl", "opencl", "rpc", "gpu_blas", "blas")


def _backend_from_flags(row: dict[str, Any]) -> str | None:
    """Old csv/json/sql rows carry one boolean per backend instead of ``backends``."""
    names = {"cuda": "CUDA", "vulkan": "Vulkan", "kompute": "Kompute", "metal": "Metal",
             "sycl": "SYCL", "opencl": "OpenCL", "rpc": "RPC", "gpu_blas": "GPU BLAS", "blas": "BLAS"}
    seen = [names[f] for f in _OLD_BACKEND_FLAGS if f in row and to_bool(row[f])]
    if seen:
        return seen[0]
    if any(f in row for f in _OLD_BACKEND_FLAGS):
        return "CPU"
    return None


def _samples(value: Any) -> list[int] | None:
    if isinstance(value, list):
        out = [to_int(v) for v in value]
        return [v for v in out if v is not None] or None
    if isinstance(value, str) and value.strip():
        out = [to_int(v) for v in re.split(r"[\s,;]+", value.strip())]
        return [v for v in out if v is not None] or None
    return None


def _from_fields(row: dict[str, Any]) -> dict[str, Any] | None:
    """Map one csv/json/sql row (llama-bench field names) to a record."""
    if not isinstance(row, dict):
        return None
    text = lambda k: (str(row[k]).strip() or None) if isinstance(row.get(k), (str, int, float)) else None  # noqa: E731
    backend = text("backends") or text("backend") or _backend_from_flags(row)
    rec = {
        "model": text("model_type"),
        "model_filename": text("model_filename"),
        "model_size_bytes": to_int(row.get("model_size")),
        "model_n_params": to_int(row.get("model_n_params")),
        "backend": backend,
        "n_threads": to_int(row.get("n_threads")),
        "n_gpu_layers": to_int(row.get("n_gpu_layers")),
        "n_batch": to_int(row.get("n_batch")),
        "n_ubatch": to_int(row.get("n_ubatch")),
        "n_prompt": to_int(row.get("n_prompt")),
        "n_gen": to_int(row.get("n_gen")),
        "n_depth": to_int(row.get("n_depth")),
        "avg_tps": to_float(row.get("avg_ts")),
        "stddev_tps": to_float(row.get("stddev_ts")),
        "avg_ns": to_int(row.get("avg_ns")),
        "stddev_ns": to_int(row.get("stddev_ns")),
        "samples_ns": _samples(row.get("samples_ns")),
        "build_commit": text("build_commit"),
        "build_number": to_int(row.get("build_number")),
        "cpu_info": text("cpu_info"),
        "gpu_info": text("gpu_info"),
        "test_time": text("test_time"),
    }
    rec = clean(rec)
    if not any(k in rec for k in ("avg_tps", "n_prompt", "n_gen", "avg_ns")):
        return None
    return rec


_INT_FIELDS = {"build_number", "model_size", "model_n_params", "n_batch", "n_ubatch", "n_threads",
               "n_gpu_layers", "main_gpu", "n_prompt", "n_gen", "n_depth", "avg_ns", "stddev_ns", "poll"}
_FLOAT_FIELDS = {"avg_ts", "stddev_ts"}
_BOOL_FIELDS = {"cuda", "opencl", "metal", "vulkan", "kompute", "sycl", "gpu_blas", "blas", "f16_kv",
                "mul_mat_q", "cpu_strict", "no_kv_offload", "use_mmap", "embeddings", "flash_attn"}


def _plausible(row: dict[str, str]) -> int:
    """How many fields of a candidate row hold a value of the type they should."""
    score = 0
    for key, value in row.items():
        v = str(value).strip()
        if key in _INT_FIELDS:
            score += to_int(v) is not None
        elif key in _FLOAT_FIELDS:
            score += to_float(v) is not None
        elif key in _BOOL_FIELDS:
            score += to_bool(v) is not None or v == "-1"
        elif key == "build_commit":
            score += bool(re.fullmatch(r"[0-9a-f]{6,40}|unknown", v))
        elif key == "test_time":
            score += bool(re.match(r"\d{4}-\d\d-\d\d", v))
        elif key in ("model_type", "model_filename", "cpu_info", "gpu_info", "type_k", "type_v"):
            score += bool(v) and to_float(v) is None
    return score


def _align(header: list[str], values: list[str]) -> dict[str, str]:
    """Zip a row to its header; on a length mismatch pick the most plausible alignment.

    Fewer values than columns: some columns are missing somewhere, so every
    split "head aligned left, tail aligned right" is tried. More values: a
    free-text field held an unquoted separator, so each column in turn absorbs
    the extra values. The candidate whose fields best match their expected
    types (numbers, booleans, commit hash, timestamp) wins.
    """
    n, m = len(header), len(values)
    if m == n:
        return dict(zip(header, values))
    candidates: list[dict[str, str]] = []
    if m < n:
        for split in range(m + 1):
            row = dict(zip(header[:split], values[:split]))
            row.update(zip(header[n - (m - split):], values[split:]))
            candidates.append(row)
    else:
        extra = m - n
        for i in range(n):
            row = dict(zip(header[:i], values[:i]))
            row[header[i]] = ",".join(values[i:i + extra + 1])
            row.update(zip(header[i + 1:], values[i + extra + 1:]))
            candidates.append(row)
    if not candidates:
        return {}
    # ties: prefer the longest left-aligned head, or the earliest absorbing column
    ordered = list(reversed(candidates)) if m < n else candidates
    return max(ordered, key=_plausible)


def _json_arrays(text: str) -> Iterator[list[Any]]:
    """Every JSON array that starts a line of ``text`` (``-o json`` output amid log lines)."""
    decoder = json.JSONDecoder()
    for match in re.finditer(r"^\s*\[", text, re.MULTILINE):
        try:
            data, _ = decoder.raw_decode(text[match.end() - 1:])
        except (ValueError, RecursionError):
            continue
        if isinstance(data, list):
            yield data


def _from_json(text: str) -> list[dict[str, Any]]:
    for data in _json_arrays(text):
        rows = [r for r in (_from_fields(d) for d in data) if r]
        if rows:
            return rows
    return []


def _from_jsonl(text: str) -> list[dict[str, Any]]:
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            rec = _from_fields(json.loads(line))
        except (ValueError, RecursionError):
            continue
        if rec:
            rows.append(rec)
    return rows


def _sql_values(text: str, start: int) -> tuple[list[str], int]:
    """Read ``(v1, 'v,2', ...)`` from ``start`` (the opening parenthesis)."""
    values, buf, i, quoted = [], [], start + 1, False
    while i < len(text):
        ch = text[i]
        if quoted:
            if ch == "'" and text[i + 1:i + 2] == "'":
                buf.append("'")
                i += 1
            elif ch == "'":
                quoted = False
            else:
                buf.append(ch)
        elif ch == "'":
            quoted = True
        elif ch in ",)":
            values.append("".join(buf).strip())
            buf = []
            if ch == ")":
                return values, i + 1
        else:
            buf.append(ch)
        i += 1
    if buf:
        values.append("".join(buf).strip())
    return values, i


def _from_sql(text: str) -> list[dict[str, Any]]:
    create = re.search(r"CREATE TABLE[^(]*\((.*?)\)\s*;", text, re.IGNORECASE | re.DOTALL)
    table_cols = re.findall(r"^\s*(\w+)\s+\w+", create.group(1), re.MULTILINE) if create else []
    rows = []
    for ins in re.finditer(r"INSERT INTO\s+\w+\s*(?:\(([^)]*)\))?\s*VALUES\s*\(", text, re.IGNORECASE):
        cols = [c.strip() for c in ins.group(1).split(",")] if ins.group(1) else table_cols
        values, _ = _sql_values(text, ins.end() - 1)
        if not cols:
            continue
        rec = _from_fields(_align(cols, values))
        if rec:
            rows.append(rec)
    return rows


def _from_csv(text: str) -> list[dict[str, Any]]:
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if "," in line and re.search(r"\bavg_ts\b|\bn_prompt\b", line):
            try:
                table = list(csv.reader(io.StringIO("\n".join(lines[i:]))))
            except csv.Error:
                return []
            header = [h.strip().strip('"') for h in table[0]]
            rows = []
            for values in table[1:]:
                if not values or values == header:
                    continue
                rec = _from_fields(_align(header, values))
                if rec:
                    rows.append(rec)
            return rows
    return []


def _cells(line: str) -> list[str]:
    line = line.strip()
    if line.startswith("|"):
        line = line[1:]
    if line.endswith("|"):
        line = line[:-1]
    return [c.strip() for c in line.split("|")]


def _md_row(cells: dict[str, str]) -> dict[str, Any] | None:
    rec: dict[str, Any] = {"extra": {}}
    for name, value in cells.items():
        key = name.lower()
        if key == "model":
            rec["model"] = value or None
        elif key == "size":
            m = _SIZE.search(value)
            size = scaled(m.group("n"), m.group("u")) if m else None
            rec["model_size_bytes"] = int(round(size)) if size is not None else None
        elif key == "params":
            m = _PARAMS.search(value)
            rec["model_n_params"] = params_count(m.group("n"), m.group("u")) if m else None
        elif key in ("backend", "backends"):
            rec["backend"] = value or None
        elif key in ("threads", "n_threads"):
            rec["n_threads"] = to_int(value)
        elif key in ("ngl", "n_gpu_layers"):
            rec["n_gpu_layers"] = to_int(value)
        elif key in ("n_batch", "n_ubatch", "n_prompt", "n_gen", "n_depth"):
            rec[key] = to_int(value)
        elif key == "test":
            tests = {m.group("kind").lower(): int(m.group("n")) for m in _TEST.finditer(value)}
            if tests:
                rec["n_prompt"] = tests.get("pp", 0)
                rec["n_gen"] = tests.get("tg", 0)
                if "pg" in tests:  # old "pg512,128" style
                    rec["n_prompt"] = tests["pg"]
                depth = _DEPTH.search(value)
                rec["n_depth"] = int(depth.group(1)) if depth else None
        elif key in ("t/s", "avg t/s", "tokens/s"):
            m = _TPS.search(value)
            if m:
                rec["avg_tps"], rec["stddev_tps"] = to_float(m.group("avg")), to_float(m.group("std"))
            else:
                rec["avg_tps"] = to_float(value)
        elif value:
            rec["extra"][name] = value
    if not rec["extra"]:
        del rec["extra"]
    rec = clean(rec)
    return rec if ("avg_tps" in rec or "n_prompt" in rec) else None


def _from_markdown(text: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    header: list[str] | None = None
    for raw in text.splitlines():
        line = raw.strip().strip("`")
        if not line.startswith("|") and line.count("|") < 2:
            header = None
            continue
        cells = _cells(line)
        lowered = [c.lower() for c in cells]
        if "model" in lowered and any(c in lowered for c in ("t/s", "test", "avg t/s")):
            header = cells
            continue
        if header is None or all(re.fullmatch(r":?-*:?", c) for c in cells):
            continue
        if len(cells) != len(header):
            # keep model at the left and test, t/s at the right
            n = min(len(cells), len(header))
            mapped = dict(zip(header[: n - 2], cells[: n - 2]))
            mapped.update(zip(header[-2:], cells[-2:]))
        else:
            mapped = dict(zip(header, cells))
        rec = _md_row(mapped)
        if rec:
            rows.append(rec)
    return rows


def parse_llama_bench(text: str) -> list[dict[str, Any]]:
    """Parse llama-bench output in any format (markdown, csv, json, jsonl, sql).

    Returns one record per test row, in order; an empty list when no row is
    found. Log lines around the table (command line, ``ggml_cuda_init``) are
    ignored. Never raises on malformed input.
    """
    text = str(text)
    rows: list[dict[str, Any]] = []
    for reader in (_from_json, _from_sql, _from_jsonl, _from_csv, _from_markdown):
        rows = reader(text)
        if rows:
            break
    build = _BUILD.search(text)
    if build:
        for row in rows:
            row.setdefault("build_commit", build.group(1))
            row.setdefault("build_number", int(build.group(2)))
    return rows


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    return True


def _is_test_row(obj: Any) -> bool:
    """A llama-bench test object: has the test's shape and its result, and no NaN or infinity."""
    return (isinstance(obj, dict) and "n_prompt" in obj and "n_gen" in obj and "avg_ts" in obj
            and all(_finite(v) for v in obj.values()))


def printed_rows(text: str) -> list[dict[str, Any]]:
    """llama-bench's test objects exactly as it printed them with ``-o jsonl`` or ``-o json``.

    Each object keeps its fields, their order and their JSON types. Lines that
    are not test objects (log lines, a truncated last line) are skipped; an
    output in another format (markdown, csv, sql) gives an empty list, since
    those lose the types. Never raises on malformed input.
    """
    text = str(text)
    rows: list[dict[str, Any]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if _is_test_row(obj):
            rows.append(obj)
    if rows:
        return rows
    for data in _json_arrays(text):
        rows = [d for d in data if _is_test_row(d)]
        if rows:
            return rows
    return []

"""Export bench results in llama-bench's own JSON, JSONL and SQL shapes.

Scripts written for ``llama-bench -o json|jsonl|sql`` (llama.cpp's
``scripts/compare-llama-bench.py`` among them) read these files unchanged.

Mapping: each ``ok`` job of kind ``bench`` is one llama-bench measurement;
the repetitions of a cell become the samples of one llama-bench test row,
so a cell gives a ``pp<n_prompt>`` row (from ``prefill_tps``) and a
``tg<n_gen>`` row (from ``decode_tps``). ``cpu_info`` carries the melt device
name (and ``[simulated]`` for virtual devices) so that different devices
stay apart in the comparison script; fields melt does not know get
llama-bench's defaults.
"""

from __future__ import annotations

import json
import math
from typing import Any, Iterable

#: llama-bench's fields, in its order, with their SQL types.
FIELDS: tuple[tuple[str, str], ...] = (
    ("build_commit", "TEXT"), ("build_number", "INTEGER"), ("cpu_info", "TEXT"),
    ("gpu_info", "TEXT"), ("backends", "TEXT"), ("model_filename", "TEXT"),
    ("model_type", "TEXT"), ("model_size", "INTEGER"), ("model_n_params", "INTEGER"),
    ("n_batch", "INTEGER"), ("n_ubatch", "INTEGER"), ("n_threads", "INTEGER"),
    ("cpu_mask", "TEXT"), ("cpu_strict", "INTEGER"), ("poll", "INTEGER"), ("type_k", "TEXT"),
    ("type_v", "TEXT"), ("n_gpu_layers", "INTEGER"), ("split_mode", "TEXT"), ("main_gpu", "INTEGER"),
    ("no_kv_offload", "INTEGER"), ("flash_attn", "INTEGER"), ("tensor_split", "TEXT"),
    ("tensor_buft_overrides", "TEXT"), ("use_mmap", "INTEGER"), ("embeddings", "INTEGER"),
    ("no_op_offload", "INTEGER"), ("n_prompt", "INTEGER"), ("n_gen", "INTEGER"),
    ("n_depth", "INTEGER"), ("test_time", "TEXT"), ("avg_ns", "INTEGER"), ("stddev_ns", "INTEGER"),
    ("avg_ts", "REAL"), ("stddev_ts", "REAL"),
)
_BOOLS = {"cpu_strict", "no_kv_offload", "flash_attn", "use_mmap", "embeddings", "no_op_offload"}

#: Table name written by current llama-bench (older versions wrote ``test``).
TABLE = "llama_bench"


def _mean_std(xs: list[float]) -> tuple[float, float]:
    m = sum(xs) / len(xs)
    if len(xs) < 2:
        return m, 0.0
    return m, math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def _cpu_info(job: dict[str, Any]) -> str:
    props = (job.get("provenance") or {}).get("device") or {}
    desc = next((str(props[k]) for k in ("cpu_info", "soc", "cpu", "hardware", "model")
                 if isinstance(props, dict) and props.get(k)), "")
    text = str(job.get("device") or "unknown") + (f" ({desc})" if desc and desc != job.get("device") else "")
    return text + (" [simulated]" if job.get("simulated") else "")


def _base_row(job: dict[str, Any]) -> dict[str, Any]:
    prov = job.get("provenance") or {}
    build = prov.get("framework_build") or {}
    model = prov.get("model") or {}
    params = job.get("params") or {}
    commit = str(build.get("build_commit") or build.get("llama_cpp_commit") or build.get("commit") or "unknown")
    model_type = " ".join(str(x) for x in (job.get("model"), model.get("quantization")) if x)
    return {
        "build_commit": commit[:7] if len(commit) >= 7 and all(c in "0123456789abcdef" for c in commit) else commit,
        "build_number": int(build.get("build_number") or 0),
        "cpu_info": _cpu_info(job),
        "gpu_info": str(build.get("gpu_info") or ""),
        "backends": str(build.get("backends") or build.get("backend") or "CPU"),
        "model_filename": str(model.get("path") or job.get("model") or ""),
        "model_type": model_type,
        "model_size": int(model.get("size_bytes") or 0),
        "model_n_params": int(model.get("n_params") or 0),
        "n_batch": int(params.get("batch") or 2048),
        "n_ubatch": int(params.get("ubatch") or 512),
        "n_threads": int(params.get("threads") or 0),
        "cpu_mask": "0x0", "cpu_strict": False, "poll": 50, "type_k": "f16", "type_v": "f16",
        "n_gpu_layers": int(params.get("n_gpu_layers") or 0), "split_mode": "layer", "main_gpu": 0,
        "no_kv_offload": False, "flash_attn": False, "tensor_split": "0.00",
        "tensor_buft_overrides": "none", "use_mmap": True, "embeddings": False, "no_op_offload": 0,
        "n_depth": int(params.get("depth") or 0),
        "test_time": str(job.get("started_at") or "")[:19] + "Z" if job.get("started_at") else "",
    }


def llama_bench_rows(jobs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """llama-bench test rows (dicts with :data:`FIELDS` plus ``samples_ns``/``samples_ts``)."""
    cells: dict[str, list[dict[str, Any]]] = {}
    for job in jobs:
        if job.get("status") == "ok" and job.get("kind") == "bench":
            cells.setdefault(str(job.get("cell_id") or job.get("job_id")), []).append(job)
    rows = []
    for group in cells.values():
        group.sort(key=lambda j: (j.get("repetition") or 0))
        params = group[0].get("params") or {}
        for metric, n_prompt, n_gen in (("prefill_tps", int(params.get("n_prompt") or 0), 0),
                                        ("decode_tps", 0, int(params.get("n_gen") or 0))):
            n_tokens = n_prompt or n_gen
            tps = [float(j["metrics"][metric]) for j in group
                   if isinstance((j.get("metrics") or {}).get(metric), (int, float))
                   and j["metrics"][metric] > 0]
            if not tps or n_tokens <= 0:
                continue
            ns = [n_tokens / t * 1e9 for t in tps]
            avg_ts, std_ts = _mean_std(tps)
            avg_ns, std_ns = _mean_std(ns)
            row = _base_row(group[0])
            row.update(n_prompt=n_prompt, n_gen=n_gen, avg_ns=int(round(avg_ns)),
                       stddev_ns=int(round(std_ns)), avg_ts=round(avg_ts, 6), stddev_ts=round(std_ts, 6))
            row = {name: row[name] for name, _ in FIELDS}
            row["samples_ns"] = [int(round(x)) for x in ns]
            row["samples_ts"] = [round(x, 6) for x in tps]
            rows.append(row)
    return rows


def to_json(rows: list[dict[str, Any]]) -> str:
    """llama-bench ``-o json``: a JSON array of test objects."""
    return json.dumps(rows, indent=2, ensure_ascii=False) + "\n"


def to_jsonl(rows: list[dict[str, Any]]) -> str:
    """llama-bench ``-o jsonl``: one test object per line."""
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def _sql_literal(name: str, value: Any) -> str:
    if name in _BOOLS:
        value = int(bool(value))
    return "'" + str(value).replace("'", "''") + "'"


def to_sql(rows: list[dict[str, Any]], table: str = TABLE) -> str:
    """llama-bench ``-o sql``: ``CREATE TABLE IF NOT EXISTS`` then one ``INSERT`` per row.

    Pipe it into ``sqlite3 llama-bench.sqlite``. Pass ``table="test"`` for
    scripts written before llama-bench renamed its table.
    """
    names = [n for n, _ in FIELDS]
    out = [f"CREATE TABLE IF NOT EXISTS {table} (\n"
           + ",\n".join(f"  {n} {t}" for n, t in FIELDS) + "\n);\n\n"]
    for r in rows:
        out.append(f"INSERT INTO {table} ({', '.join(names)}) VALUES ("
                   + ", ".join(_sql_literal(n, r[n]) for n in names) + ");\n")
    return "".join(out)


def export_llama_bench(jobs: Iterable[dict[str, Any]], fmt: str = "json") -> str:
    """Job records -> llama-bench output text in ``fmt`` (``json``, ``jsonl`` or ``sql``).

    Raises ``ValueError`` for another format.
    """
    rows = llama_bench_rows(jobs)
    if fmt == "json":
        return to_json(rows)
    if fmt == "jsonl":
        return to_jsonl(rows)
    if fmt == "sql":
        return to_sql(rows)
    raise ValueError(f"unknown llama-bench format {fmt!r}; use json, jsonl or sql")

"""llama.cpp timing blocks (``llamacpp-timings``).

llama.cpp prints a timing summary at the end of every run. Three families of
prefixes have been used over the years, all handled here:

* ``llama_print_timings:`` (2023 to mid 2024; the oldest lines carry no
  "tokens per second" part, some say "ms per run"),
* ``llama_perf_sampler_print:`` / ``llama_perf_context_print:`` (from late 2024),
* ``common_perf_print:`` (from late 2025, with ``samplers time``,
  ``unaccounted time`` and ``graphs reused`` lines).

The server's ``print_timings:`` lines (``prompt eval time = ...``) are read too.

One record per timing block, in order. Canonical fields (units in the names):
``load_ms``, ``sample_ms``, ``sample_runs``, ``prompt_ms``, ``prompt_tokens``,
``prefill_tps``, ``decode_ms``, ``gen_tokens`` (eval runs), ``decode_tps``,
``total_ms``, ``total_tokens``; plus ``model`` when a loader line names the
model file, and ``interrupted: true`` when the run ended with ``Interrupted by
user``. ``prefill_tps``/``decode_tps`` are taken from the text when printed and
otherwise left out (never derived from a zero). Comma decimal separators
(``1234,56 ms``), trailing junk and generated text glued in front of the
prefix are tolerated.
"""

from __future__ import annotations

import re
from typing import Any

from melt.parsers._num import NUMBER, to_float, to_int

_PREFIX = re.compile(
    r"(?:llama_print_timings|llama_perf_\w*?print|common_perf_print|print_timings)\s*:"
    r"(?:.*?\|)?\s*(?P<body>.*)$"
)
_LINE = re.compile(
    rf"(?P<label>[a-z]+(?: [a-z]+)*)\s*=\s*(?P<ms>{NUMBER})\s*ms"
    rf"(?:\s*/\s*(?P<count>{NUMBER})\s*(?P<unit>runs?|tokens?))?"
)
_TPS = re.compile(rf"(?P<tps>{NUMBER})\s*tokens? per second")
_GRAPHS = re.compile(r"graphs reused\s*=\s*(\d+)")
_MODEL_PATTERNS = (
    re.compile(r"llama_model_loader: loaded meta data .*? from (?P<m>\S+)"),
    re.compile(r"llama_model_load(?:_internal)?: loading model from '?(?P<m>[^'\s]+)'?"),
    re.compile(r"llama_load_model_from_file: .*? from (?P<m>\S+)"),
    re.compile(r"main: loading model from '?(?P<m>[^'\s]+)'?"),
)
_INTERRUPTED = re.compile(r"interrupted by user", re.IGNORECASE)

# label (as printed) -> (ms field, count field, tps field)
_FIELDS: dict[str, tuple[str, str | None, str | None]] = {
    "load time": ("load_ms", None, None),
    "sample time": ("sample_ms", "sample_runs", None),
    "sampling time": ("sample_ms", "sample_runs", None),
    "samplers time": ("samplers_ms", "sample_runs", None),
    "prompt eval time": ("prompt_ms", "prompt_tokens", "prefill_tps"),
    "eval time": ("decode_ms", "gen_tokens", "decode_tps"),
    "total time": ("total_ms", "total_tokens", None),
    "unaccounted time": ("unaccounted_ms", None, None),
}
# fields that, when seen again or after a total, open a new block
_OPENERS = {"load_ms", "sample_ms", "prompt_ms", "decode_ms", "samplers_ms"}


def _parse_body(body: str) -> tuple[str, dict[str, Any]] | None:
    """Read one timing line's body into (ms field, values)."""
    graphs = _GRAPHS.search(body)
    if graphs:
        return "graphs_reused", {"graphs_reused": to_int(graphs.group(1))}
    match = _LINE.search(body)
    if not match:
        return None
    label = " ".join(match.group("label").split())
    spec = _FIELDS.get(label)
    if spec is None:
        return None
    ms_key, count_key, tps_key = spec
    values: dict[str, Any] = {ms_key: to_float(match.group("ms"))}
    if values[ms_key] is None:
        return None
    if count_key and match.group("count") is not None and label != "unaccounted time":
        values[count_key] = to_int(match.group("count"))
    if tps_key:
        tps = _TPS.search(body, match.end())
        if tps:
            values[tps_key] = to_float(tps.group("tps"))
    return ms_key, {k: v for k, v in values.items() if v is not None}


def parse_timings(text: str) -> list[dict[str, Any]]:
    """Parse every llama.cpp timing block in ``text``.

    Returns one dict per block, in the order printed; an empty list when the
    text holds no timing lines. Never raises on malformed input.
    """
    records: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    model: str | None = None
    interrupted = False
    for line in str(text).splitlines():
        for pattern in _MODEL_PATTERNS:
            found = pattern.search(line)
            if found:
                model = found.group("m").strip("'\",")
                break
        if _INTERRUPTED.search(line):
            if current:
                current["interrupted"] = True
            else:
                interrupted = True
        prefix = _PREFIX.search(line)
        if not prefix:
            continue
        parsed = _parse_body(prefix.group("body"))
        if parsed is None:
            continue
        key, values = parsed
        if current and (key in current or ("total_ms" in current and key in _OPENERS)):
            records.append(current)
            current = {}
        if not current:
            if model:
                current["model"] = model
            if interrupted:
                current["interrupted"], interrupted = True, False
        for k, v in values.items():
            if k == "sample_runs" and k in current:
                continue
            current[k] = v
    if any(k not in ("model", "interrupted") for k in current):
        records.append(current)
    return records

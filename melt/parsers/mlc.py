"""MLC-LLM runtime statistics (``mlc-stats``).

Shapes read, each giving one record per report, in order:

* the ``/stats`` one-liner ``prefill: 30.1 tok/s, decode: 12.3 tok/s`` (older
  builds say ``encode:`` for prefill; chat apps may wrap it in backticks),
* the verbose ``/stats`` form: ``-----prefill-----`` / ``throughput: X tok/s`` /
  ``total tokens: N tok`` / ``total time: T s`` sections, then ``decode``,
* the serving engine's ``/metrics`` lines or JSON keys (``prefill_tokens_per_s``,
  ``decode_tokens_per_s``, ``prefill_tokens_sum``, ``decode_tokens_sum``,
  ``prompt_tokens``, ``completion_tokens``, ``ttft_s``),
* jetson-containers' MLC benchmark lines (``MODEL:  input=16 output=128
  prefill_time 0.081 sec, prefill_rate 197.0 tokens/sec, decode_time 6.6 sec,
  decode_rate 19.3 tokens/sec``),
* the per-token debug log (``[i: 166] decoding-time=8.7ms tok/s: 117.3.``):
  one record per run of such lines, ``decode_tps`` is the last running value.

Fields: ``prefill_tps``, ``decode_tps``, and where printed ``prompt_tokens``,
``gen_tokens``, ``ttft_ms``, ``prefill_ms``, ``decode_ms``, ``model``.
"""

from __future__ import annotations

import json
import re
from typing import Any

from melt.parsers._num import NUMBER, to_float, to_int

_N = NUMBER
_ONELINE = re.compile(rf"\b(?P<which>prefill|encode|decode)\s*:\s*(?P<v>{_N})\s*tok(?:en)?s?/s", re.I)
_SECTION = re.compile(r"^[^\w-]*-{2,}\s*(?P<which>prefill|decode|encode)\s*-{2,}", re.I)
_THROUGHPUT = re.compile(rf"^\W*throughput\s*:\s*(?P<v>{_N})\s*tok", re.I)
_TOTAL_TOKENS = re.compile(rf"^\W*total tokens\s*:\s*(?P<v>{_N})", re.I)
_TOTAL_TIME = re.compile(rf"^\W*total time\s*:\s*(?P<v>{_N})\s*(?P<u>ms|s)\b", re.I)
_JETSON = re.compile(rf"prefill_time\s+(?P<pt>{_N})\s*sec,?\s*prefill_rate\s+(?P<pr>{_N})", re.I)
_JETSON_DEC = re.compile(rf"decode_time\s+(?P<dt>{_N})\s*sec,?\s*decode_rate\s+(?P<dr>{_N})", re.I)
_JETSON_IO = re.compile(r"input=(?P<i>\d+)\s+output=(?P<o>\d+)")
_JETSON_MODEL = re.compile(r"^\s*(?P<m>\S.*?):\s+(?:input=|prefill_time)")
_METRIC = re.compile(rf"^\W*(?P<k>prefill_tokens_per_s|decode_tokens_per_s|prefill_tokens_sum|decode_tokens_sum|"
                     rf"prompt_tokens|completion_tokens|ttft_s|ttft|time_to_first_token_s)\W*\s*[:=]?\s*(?P<v>{_N})\b", re.I)
_PER_TOKEN = re.compile(rf"\[i:\s*(?P<i>\d+)\]\s*decoding-time=(?P<ms>{_N})ms\s*tok/s:\s*(?P<tps>{_N})")
_ENC_DEC = re.compile(rf"encoding-time=(?P<e>{_N})\s*ms,?\s*decoding-time=(?P<d>{_N})\s*ms")
_TTFT = re.compile(rf"(?:time to first token|ttft)\s*(?:\((?P<u1>ms|s)\))?\s*[:=]\s*(?P<v>{_N})\s*(?P<u2>ms|s)?", re.I)

_METRIC_KEYS = {
    "prefill_tokens_per_s": ("prefill_tps", to_float),
    "decode_tokens_per_s": ("decode_tps", to_float),
    "prefill_tokens_sum": ("prompt_tokens", to_int),
    "prompt_tokens": ("prompt_tokens", to_int),
    "decode_tokens_sum": ("gen_tokens", to_int),
    "completion_tokens": ("gen_tokens", to_int),
}


class _Collector:
    """Groups values into records: a new record starts when the report shape
    changes or a field would be overwritten."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.current: dict[str, Any] = {}
        self.form: str | None = None

    def flush(self) -> None:
        if any(k in self.current for k in ("prefill_tps", "decode_tps", "ttft_ms", "prefill_ms", "decode_ms")):
            self.records.append(self.current)
        self.current, self.form = {}, None

    def put(self, form: str, values: dict[str, Any]) -> None:
        values = {k: v for k, v in values.items() if v is not None}
        if not values:
            return
        if self.form is not None and form != self.form:
            self.flush()
        if any(k in self.current for k in values) and not (form == "per-token"):
            self.flush()
        self.form = form
        self.current.update(values)


def _walk_json(obj: Any, found: dict[str, Any], depth: int = 0) -> None:
    if depth > 20:
        return
    if isinstance(obj, dict):
        for key, value in obj.items():
            k = str(key).lower()
            if k in _METRIC_KEYS and not isinstance(value, (dict, list)):
                name, conv = _METRIC_KEYS[k]
                found.setdefault(name, conv(value))
            elif k in ("ttft_s", "ttft", "time_to_first_token_s") and not isinstance(value, (dict, list)):
                v = to_float(value)
                found.setdefault("ttft_ms", v * 1000 if v is not None else None)
            else:
                _walk_json(value, found, depth + 1)
    elif isinstance(obj, list):
        for item in obj[:1000]:
            _walk_json(item, found, depth + 1)


def _json_stats(line: str) -> dict[str, Any]:
    start = line.find("{")
    if start < 0 or "tokens_per_s" not in line and "ttft" not in line:
        return {}
    try:
        obj, _ = json.JSONDecoder().raw_decode(line[start:])
    except (ValueError, RecursionError):
        return {}
    found: dict[str, Any] = {}
    _walk_json(obj, found)
    return found


def parse_mlc_stats(text: str) -> list[dict[str, Any]]:
    """Parse MLC-LLM statistics from ``text`` (any shape listed in the module doc).

    Returns one dict per report in order; ``[]`` when none is found. Never
    raises on malformed input.
    """
    out = _Collector()
    section: str | None = None
    for line in str(text).splitlines():
        stripped = line.strip().strip("`")
        found = _json_stats(stripped)
        if found:
            out.put("json", found)
            continue
        sec = _SECTION.match(stripped)
        if sec:
            section = "prefill" if sec.group("which").lower() in ("prefill", "encode") else "decode"
            continue
        if section:
            tp, tt, tm = _THROUGHPUT.match(stripped), _TOTAL_TOKENS.match(stripped), _TOTAL_TIME.match(stripped)
            if tp or tt or tm:
                if tp:
                    out.put("verbose", {f"{section}_tps": to_float(tp.group("v"))})
                if tt:
                    out.put("verbose", {"prompt_tokens" if section == "prefill" else "gen_tokens": to_int(tt.group("v"))})
                if tm:
                    v = to_float(tm.group("v"))
                    ms = v * (1 if tm.group("u").lower() == "ms" else 1000) if v is not None else None
                    out.put("verbose", {f"{section}_ms": ms})
                continue
            if stripped:
                section = None
        pieces = {m.group("which").lower(): to_float(m.group("v")) for m in _ONELINE.finditer(stripped)}
        if pieces:
            values = {"prefill_tps": pieces.get("prefill", pieces.get("encode")), "decode_tps": pieces.get("decode")}
            out.put("oneline", values)
            continue
        jet = _JETSON.search(stripped)
        if jet:
            dec, io_, model = _JETSON_DEC.search(stripped), _JETSON_IO.search(stripped), _JETSON_MODEL.match(stripped)
            pt = to_float(jet.group("pt"))
            values = {
                "model": model.group("m").strip() if model else None,
                "prompt_tokens": to_int(io_.group("i")) if io_ else None,
                "gen_tokens": to_int(io_.group("o")) if io_ else None,
                "prefill_ms": pt * 1000 if pt is not None else None,
                "prefill_tps": to_float(jet.group("pr")),
            }
            if dec:
                dt = to_float(dec.group("dt"))
                values["decode_ms"] = dt * 1000 if dt is not None else None
                values["decode_tps"] = to_float(dec.group("dr"))
            out.flush()
            out.put("jetson", values)
            out.flush()
            continue
        tok = _PER_TOKEN.search(stripped)
        if tok:
            i = int(tok.group("i"))
            if out.form == "per-token" and i <= out.current.get("_last_i", -1):
                out.flush()
            if out.form != "per-token":
                out.flush()
                out.put("per-token", {"prompt_tokens": i - 1 if i >= 1 else None, "_first_i": i})
            first = out.current.get("_first_i", i)
            out.put("per-token", {"decode_tps": to_float(tok.group("tps")), "gen_tokens": i - first + 1, "_last_i": i})
            continue
        encdec = _ENC_DEC.search(stripped)
        if encdec:
            out.put("encdec", {"prefill_ms": to_float(encdec.group("e")), "decode_ms": to_float(encdec.group("d"))})
            continue
        metric = _METRIC.match(stripped)
        if metric:
            key = metric.group("k").lower()
            if key in _METRIC_KEYS:
                name, conv = _METRIC_KEYS[key]
                out.put("metrics", {name: conv(metric.group("v"))})
            else:
                v = to_float(metric.group("v"))
                out.put("metrics", {"ttft_ms": v * 1000 if v is not None else None})
            continue
        ttft = _TTFT.search(stripped)
        if ttft:
            v = to_float(ttft.group("v"))
            unit = (ttft.group("u1") or ttft.group("u2") or "s").lower()
            out.put(out.form or "ttft", {"ttft_ms": (v if unit == "ms" else v * 1000) if v is not None else None})
    out.flush()
    return [{k: v for k, v in r.items() if not k.startswith("_")} for r in out.records]

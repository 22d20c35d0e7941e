"""Metrics of streamed llama-server jobs, from their transcripts. Pure: no I/O.

Times in a transcript are the host's wall clock (s) when each event
arrived. Measured on the host:

- ``ttft_ms``: request sent -> first token arrived (median over requests);
- ``itl_ms_p50`` / ``_p90`` / ``_p99``: gaps between consecutive tokens of one
  stream, pooled over the requests (tokens that arrived in one event share a
  time and count as a gap of 0);
- ``itl_ms_mean``: the mean of those gaps (the one to set against a decode
  rate, since stalls count in both);
- ``e2e_ms``: request sent -> final event (median).

Every host time includes the transport: ``transport_rtt_ms`` (the best
``/health`` round trip through the forward) is stated beside them; TTFT
carries about one round trip of it, ITL none on average.

From llama-server's own per-request timings: ``prefill_tps``, ``decode_tps``
(tokens over the server's prompt and generation times, summed over requests),
``prompt_tokens`` (tokens prefilled, cached ones excluded), ``gen_tokens``.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from melt.errors import JobFailed


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), q))


def request_row(r: Mapping[str, Any]) -> dict[str, Any]:
    """One request's numbers (ms, tokens, tok/s); a number the stream lacks is absent."""
    times = r.get("token_times_s") or []
    t = r.get("timings") or {}
    row: dict[str, Any] = {}
    if times:
        row["ttft_ms"] = 1000.0 * (times[0] - r["sent_s"])
        row["stream_ms"] = 1000.0 * (times[-1] - times[0])
    row["e2e_ms"] = 1000.0 * (r["done_s"] - r["sent_s"])
    row["gen_tokens"] = len(times)
    if t.get("prompt_n") is not None:
        row["prompt_tokens"] = int(t["prompt_n"])
    if t.get("prompt_ms"):
        row["prefill_ms"] = float(t["prompt_ms"])
        if t.get("prompt_n"):
            row["prefill_tps"] = 1000.0 * t["prompt_n"] / t["prompt_ms"]
    if t.get("predicted_ms"):
        row["decode_ms"] = float(t["predicted_ms"])
        if t.get("predicted_n"):
            row["decode_tps"] = 1000.0 * t["predicted_n"] / t["predicted_ms"]
    if t.get("cache_n") is not None:
        row["cached_tokens"] = int(t["cache_n"])
    if r.get("tokens_evaluated") is not None:
        row["context_tokens"] = int(r["tokens_evaluated"])
    return row


def itl_gaps_ms(requests: list[Mapping[str, Any]]) -> list[float]:
    """Inter-token gaps (ms) within each request, pooled."""
    gaps: list[float] = []
    for r in requests:
        times = r.get("token_times_s") or []
        gaps.extend(1000.0 * (b - a) for a, b in zip(times, times[1:]))
    return gaps


def all_requests(transcript: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The requests of a transcript in order (a conversation's turns flattened)."""
    if "conversations" in transcript:
        return [t for conv in transcript["conversations"] for t in conv["turns"]]
    return list(transcript.get("requests") or [])


def stream_metrics(transcript: Mapping[str, Any]) -> dict[str, float]:
    """Job metrics of a served transcript (see the module doc).

    Raises :class:`JobFailed` when no request produced a token.
    """
    requests = all_requests(transcript)
    rows = [request_row(r) for r in requests]
    if not rows or not any(row.get("gen_tokens") for row in rows):
        raise JobFailed("the server streamed no tokens")
    m: dict[str, float] = {"requests": float(len(rows))}
    ttft = [row["ttft_ms"] for row in rows if "ttft_ms" in row]
    if ttft:
        m["ttft_ms"] = statistics_median(ttft)
        m["ttft_ms_max"] = max(ttft)
    gaps = itl_gaps_ms(requests)
    if gaps:
        for q in (50, 90, 99):
            m[f"itl_ms_p{q}"] = _pct(gaps, q)
        m["itl_ms_mean"] = sum(gaps) / len(gaps)
    m["e2e_ms"] = statistics_median([row["e2e_ms"] for row in rows])
    m["gen_tokens"] = float(sum(row["gen_tokens"] for row in rows))
    for phase, n_key, ms_key in (("prefill", "prompt_tokens", "prefill_ms"), ("decode", None, "decode_ms")):
        with_time = [row for row in rows if row.get(ms_key)]
        if not with_time:
            continue
        total_ms = sum(row[ms_key] for row in with_time)
        if phase == "prefill":
            tokens = sum(row.get("prompt_tokens", 0) for row in with_time)
            m["prompt_tokens"] = float(tokens)
        else:
            tokens = sum((r.get("timings") or {}).get("predicted_n", 0) for r in requests if (r.get("timings") or {}).get("predicted_ms"))
        if tokens and total_ms > 0:
            m[f"{phase}_tps"] = 1000.0 * tokens / total_ms
    rtt = (transcript.get("transport") or {}).get("rtt_ms_min")
    if rtt is not None:
        m["transport_rtt_ms"] = float(rtt)
    if "conversations" in transcript:
        m["conversations"] = float(len(transcript["conversations"]))
        m["turns"] = float(len(rows))
        ctx = [row["context_tokens"] for row in rows if "context_tokens" in row]
        if ctx:
            m["context_tokens_max"] = float(max(ctx))
    if transcript.get("kind") == "sustained":
        m.update(sustained_rates(transcript))
    return {k: v for k, v in m.items() if isinstance(v, (int, float)) and math.isfinite(v)}


def statistics_median(values: list[float]) -> float:
    return float(np.median(np.asarray(values, dtype=float)))


def turn_rows(transcript: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per-turn rows of a conversation transcript (conversation index, turn number, numbers)."""
    out = []
    for conv in transcript.get("conversations") or []:
        for t in conv["turns"]:
            row = {"conversation": conv["index"], "turn": t["turn"], **request_row(t)}
            row["sent_s"], row["done_s"] = t["sent_s"], t["done_s"]
            if t.get("token_times_s"):
                row["first_token_s"] = t["token_times_s"][0]
            out.append(row)
    return out


def token_rate_series(transcript: Mapping[str, Any], window_s: float) -> list[dict[str, float]]:
    """Generated tokens per second in consecutive windows from the first request (host times).

    Each row: ``start_s``/``end_s`` (host wall clock) and ``tps``. The last,
    partial window is dropped unless it is the only one.
    """
    requests = all_requests(transcript)
    times = sorted(t for r in requests for t in (r.get("token_times_s") or []))
    if not times or window_s <= 0:
        return []
    t0 = requests[0]["sent_s"]
    t_end = max(times[-1], t0 + window_s)
    edges = np.arange(t0, t_end + 1e-9, window_s)
    if edges.size < 2:
        edges = np.array([t0, t0 + window_s])
    counts, _ = np.histogram(times, bins=edges)
    return [{"start_s": float(a), "end_s": float(b), "tokens": int(c), "tps": float(c) / window_s}
            for a, b, c in zip(edges[:-1], edges[1:], counts)]


def sustained_rates(transcript: Mapping[str, Any]) -> dict[str, float]:
    """``decode_tps_peak`` (best window), ``decode_tps_sustained`` (mean of the last quarter of
    the windows, at least one) and their ratio, over windows of ``window_s`` (transcript)."""
    series = token_rate_series(transcript, float(transcript.get("window_s") or 5.0))
    if len(series) < 2:
        return {}
    rates = [row["tps"] for row in series]
    tail = rates[-max(1, len(rates) // 4):]
    peak, settled = max(rates), float(np.mean(tail))
    out = {"decode_tps_peak": peak, "decode_tps_sustained": settled, "windows": float(len(rates))}
    if peak > 0:
        out["decode_tps_sustained_ratio"] = settled / peak
    return out

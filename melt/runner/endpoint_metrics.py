"""The network's part and the server's own counts of an endpoint job. Pure: transcript in, numbers out.

Per request the client recorded the TCP set-up (``connect_ms``), the TLS
handshake (``tls_ms``), the arrival of the response's first byte
(``first_byte_s``) and, when the server sent them, its ``usage`` counts and
(llama-server) its own ``timings``. Medians over the requests:

- ``net_connect_ms``, ``net_tls_ms``: connection set-up, one network round trip each
  (plus the handshake's crypto for TLS);
- ``ttfb_ms``: request sent -> first byte of the response;
- ``server_prefill_ms``: the server's own prompt time (its ``timings.prompt_ms``);
- ``network_ttft_ms``: TTFT minus the server's prompt time, request by request: what the
  network, the HTTP stack and the queue in front of the model add to the time to first
  token. A delay on the wire shows here and in ``transport_rtt_ms``, not in the server's part.

Sums over the requests: ``usage_prompt_tokens``, ``usage_completion_tokens`` (only when
every request reported them); ``retries`` (requests retried after a 429, a 5xx or a failed
connection). A server without timings gets ``decode_tps`` from the stream as it arrived
(chunks, or its ``usage.completion_tokens``, over first to last chunk).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

#: The reason telemetry metrics of an endpoint job are absent.
REMOTE = "remote endpoint"
#: What a device cell measures that an endpoint cannot: absent, with :data:`REMOTE`.
DEVICE_ONLY = ("energy_prefill_j", "energy_decode_j", "energy_per_token_prefill_j",
               "energy_per_token_decode_j", "avg_power_w", "temp_start_c", "temp_end_c", "temp_max_c",
               "peak_rss_bytes", "throttled")


def _median(values: list[float]) -> float | None:
    return float(np.median(np.asarray(values, dtype=float))) if values else None


def _requests(transcript: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    from melt.frameworks.llamacpp.stream_metrics import all_requests

    return [r for r in all_requests(transcript) if isinstance(r, Mapping)]


def endpoint_metrics(transcript: Mapping[str, Any]) -> tuple[dict[str, float], dict[str, str], dict[str, Any]]:
    """(metrics, missing metrics with their reasons, notes for provenance) of an endpoint transcript."""
    reqs = _requests(transcript)
    m: dict[str, float] = {}
    missing: dict[str, str] = {}
    notes: dict[str, Any] = {}
    connect = [float(r["connect_ms"]) for r in reqs if r.get("connect_ms") is not None]
    tls = [float(r["tls_ms"]) for r in reqs if r.get("tls_ms") is not None]
    ttfb = [1000.0 * (r["first_byte_s"] - r["sent_s"]) for r in reqs if r.get("first_byte_s") is not None]
    for key, values in (("net_connect_ms", connect), ("net_tls_ms", tls), ("ttfb_ms", ttfb)):
        value = _median(values)
        if value is not None:
            m[key] = value
    if not tls:
        missing["net_tls_ms"] = "plain http: no TLS handshake"
    prefill = [(r, float((r.get("timings") or {})["prompt_ms"])) for r in reqs
               if (r.get("timings") or {}).get("prompt_ms") is not None and r.get("token_times_s")]
    if prefill and len(prefill) == len(reqs):
        m["server_prefill_ms"] = _median([ms for _, ms in prefill])  # type: ignore[assignment]
        m["network_ttft_ms"] = _median(  # type: ignore[assignment]
            [1000.0 * (r["token_times_s"][0] - r["sent_s"]) - ms for r, ms in prefill])
    else:
        why = "the endpoint returned no server timings: its prefill cannot be told from the network"
        missing["server_prefill_ms"] = missing["network_ttft_ms"] = why
    usages = [r.get("usage") for r in reqs]
    if reqs and all(isinstance(u, Mapping) for u in usages):
        for key in ("prompt_tokens", "completion_tokens"):
            if all(u.get(key) is not None for u in usages):  # type: ignore[union-attr]
                m[f"usage_{key}"] = float(sum(u[key] for u in usages))  # type: ignore[index]
        if all(u.get("cached_tokens") is not None for u in usages):  # type: ignore[union-attr]
            m["usage_cached_tokens"] = float(sum(u["cached_tokens"] for u in usages))  # type: ignore[index]
    else:
        missing["usage_completion_tokens"] = "the endpoint did not return usage counts for every request"
    m["retries"] = float(transcript.get("retries") or 0)
    if not any((r.get("timings") or {}).get("predicted_ms") for r in reqs):
        rate = client_decode_tps(reqs)
        if rate is not None:
            m["decode_tps"] = rate
            notes["decode_tps_source"] = "the stream as it arrived (no server timings)"
    else:
        notes["decode_tps_source"] = "the server's own timings"
    return {k: v for k, v in m.items() if math.isfinite(v)}, missing, notes


def client_decode_tps(reqs: list[Mapping[str, Any]]) -> float | None:
    """Tokens after the first over first -> last chunk, summed over requests (host times)."""
    tokens, seconds = 0.0, 0.0
    for r in reqs:
        times = r.get("token_times_s") or []
        if len(times) < 2 or times[-1] <= times[0]:
            continue
        n = (r.get("usage") or {}).get("completion_tokens") or len(times)
        tokens += max(0, int(n) - 1)
        seconds += times[-1] - times[0]
    return tokens / seconds if seconds > 0 and tokens > 0 else None


def absent_metrics(kind: str) -> dict[str, str]:
    """The device-only metrics of a ``kind`` job, each with :data:`REMOTE` as its reason."""
    out = {key: REMOTE for key in DEVICE_ONLY}
    if kind == "conversation":
        out["energy_conversation_j"] = REMOTE
    if kind == "sustained":
        out.update({"energy_per_token_start_j": REMOTE, "energy_per_token_end_j": REMOTE,
                    "time_to_first_throttle_s": REMOTE})
    return out

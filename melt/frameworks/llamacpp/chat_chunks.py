"""One chunk of an OpenAI-compatible ``/chat/completions`` stream, read defensively. Pure: no I/O.

A chunk is the JSON after ``data:`` in a server-sent event::

    {"choices": [{"delta": {"content": "Hi"}, "finish_reason": null, "index": 0}], ...}

The last ones carry ``finish_reason`` and, when asked for with
``stream_options.include_usage``, the server's own ``usage`` counts;
llama-server adds its ``timings``. Anything else a server may send is
refused with :class:`ChunkError`: a payload that is not JSON or not an
object, an ``error`` object, ``choices`` that is not a list of objects,
content that is not text, counts that are not small non-negative integers.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

#: Counts above this are not believed (tokens in one request).
MAX_COUNT = 1 << 31
#: What melt keeps of an ``error`` message.
MAX_ERROR_CHARS = 300


class ChunkError(ValueError):
    """A chunk that is not one (the reason is in the message)."""


@dataclass(frozen=True)
class Chunk:
    """What melt takes from one chunk."""

    content: str = ""
    finish_reason: str | None = None
    usage: dict[str, int] | None = None  # prompt_tokens, completion_tokens, total_tokens, cached_tokens
    timings: dict[str, float] | None = None  # llama-server's own (prompt_ms, predicted_ms, ...)


def _count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < MAX_COUNT:
        raise ChunkError(f"{what} is not a token count: {str(value)[:40]!r}")
    return value


def _usage(raw: Any) -> dict[str, int] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ChunkError("usage is not an object")
    out = {k: _count(raw[k], f"usage.{k}") for k in ("prompt_tokens", "completion_tokens", "total_tokens")
           if raw.get(k) is not None}
    details = raw.get("prompt_tokens_details")
    if isinstance(details, dict) and details.get("cached_tokens") is not None:
        out["cached_tokens"] = _count(details["cached_tokens"], "usage.prompt_tokens_details.cached_tokens")
    return out


def _timings(raw: Any) -> dict[str, float] | None:
    if not isinstance(raw, dict):
        return None  # not part of the API: ignored rather than refused
    out: dict[str, float] = {}
    for k, v in raw.items():
        if isinstance(k, str) and len(k) <= 40 and isinstance(v, (int, float)) and not isinstance(v, bool) \
                and math.isfinite(v) and 0 <= v < 1e12:
            out[k] = v
    return out


def read_chunk(payload: bytes | str) -> Chunk:
    """The parts of one chunk melt uses; raises :class:`ChunkError` for anything else."""
    try:
        event = json.loads(payload)
    except (ValueError, RecursionError) as exc:
        raise ChunkError(f"a chunk is not JSON ({exc})") from None
    if not isinstance(event, dict):
        raise ChunkError("a chunk is not a JSON object")
    if "error" in event:
        err = event["error"]
        msg = err.get("message") if isinstance(err, dict) else err
        raise ChunkError(f"the server sent an error: {str(msg)[:MAX_ERROR_CHARS]}")
    choices = event.get("choices", [])
    if not isinstance(choices, list) or not all(isinstance(c, dict) for c in choices):
        raise ChunkError("choices is not a list of objects")
    content, finish = "", None
    for choice in choices[:1]:  # one answer per request (n = 1)
        delta = choice.get("delta")
        delta = {} if delta is None else delta
        if not isinstance(delta, dict):
            raise ChunkError("delta is not an object")
        text = delta.get("content")
        if text is not None and not isinstance(text, str):
            raise ChunkError("delta.content is not text")
        content = text or ""
        reason = choice.get("finish_reason")
        if reason is not None:
            if not isinstance(reason, str):
                raise ChunkError("finish_reason is not text")
            finish = reason[:40]
    return Chunk(content, finish, _usage(event.get("usage")), _timings(event.get("timings")))


def retry_after_s(header: str | None) -> float | None:
    """Seconds of a ``Retry-After`` header (a number of seconds only; at most 60), else None."""
    if not header:
        return None
    try:
        value = float(header.strip()[:20])
    except ValueError:
        return None
    return min(60.0, value) if math.isfinite(value) and value >= 0 else None

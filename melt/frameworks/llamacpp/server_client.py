"""A small host-side client for llama-server's HTTP API that times every token.

Completions are streamed (``/completion`` with ``stream: true``: one
server-sent event per generated token, ``return_tokens`` so each event says
how many tokens it carries). Arrival times are taken on the host with
:func:`time.perf_counter` and reported on the host's wall clock
(``time.time()`` anchored once per client), so they can be mapped onto the
device clock with a measured offset. A read that waits longer than
``stall_timeout_s`` for the next byte fails the request with
:class:`melt.errors.JobFailed` (the stream stalled). The server is not
trusted to stop: an event line over :data:`MAX_EVENT_LINE_BYTES`, or a body or
stream over :data:`MAX_RESPONSE_BYTES`, fails it with
:class:`melt.errors.OutputTooLargeError`.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from melt.errors import JobFailed, OutputTooLargeError

#: The most melt reads of one server-sent event line: far above a token's event.
MAX_EVENT_LINE_BYTES = 4 << 20
#: The most melt reads of one response (a JSON body, or a whole stream of events).
MAX_RESPONSE_BYTES = 64 << 20


@dataclass
class StreamedCompletion:
    """One streamed request as the host saw it (times: host wall clock, seconds)."""

    sent_s: float
    token_times_s: list[float] = field(default_factory=list)  # one entry per generated token
    done_s: float = 0.0  # the final event (with the server's timings) arrived
    text: str = ""
    timings: dict[str, Any] = field(default_factory=dict)  # llama-server's own, per request
    tokens_evaluated: int | None = None  # prompt tokens in the context (history included)
    tokens_cached: int | None = None
    stop_type: str | None = None

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["token_times_s"] = [round(t, 6) for t in self.token_times_s]
        return d


class ServerClient:
    """Talks to one llama-server at ``127.0.0.1:port`` (a forwarded port)."""

    def __init__(self, port: int, *, host: str = "127.0.0.1", stall_timeout_s: float = 60.0):
        self.host, self.port = host, int(port)
        self.stall_timeout_s = float(stall_timeout_s)
        self._wall0, self._perf0 = time.time(), time.perf_counter()

    def now(self) -> float:
        """Host wall-clock time (s) with perf_counter resolution."""
        return self._wall0 + (time.perf_counter() - self._perf0)

    def _conn(self, timeout: float | None = None) -> http.client.HTTPConnection:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout or self.stall_timeout_s)
        conn.connect()
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    def health(self, timeout: float = 5.0) -> int:
        """HTTP status of ``GET /health`` (200 once the model is loaded, 503 while loading).

        Raises ``OSError`` (or ``http.client.HTTPException``) when nothing answers.
        """
        conn = self._conn(timeout)
        try:
            conn.request("GET", "/health")
            resp = conn.getresponse()
            _body(resp, "/health")
            return resp.status
        finally:
            conn.close()

    def round_trip_s(self, n: int = 5) -> list[float]:
        """Round trips (s) of ``GET /health`` on one kept-alive connection: the transport's latency."""
        conn = self._conn(10.0)
        out = []
        try:
            for _ in range(n):
                t0 = time.perf_counter()
                conn.request("GET", "/health")
                resp = conn.getresponse()
                _body(resp, "/health")
                out.append(time.perf_counter() - t0)
        finally:
            conn.close()
        return out

    def _post_json(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        conn = None
        try:
            conn = self._conn()
            conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            data = _body(resp, path)
            if resp.status != 200:
                raise JobFailed(f"llama-server {path} answered HTTP {resp.status}: {_error_text(data)}")
            return json.loads(data)
        except socket.timeout:
            raise JobFailed(f"llama-server {path} did not answer within {self.stall_timeout_s:g} s") from None
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise JobFailed(f"llama-server {path} failed: {exc or type(exc).__name__}") from None
        finally:
            if conn is not None:
                conn.close()

    def apply_template(self, messages: list[dict[str, str]]) -> str:
        """The prompt the model's chat template makes of ``messages`` (``/apply-template``)."""
        return str(self._post_json("/apply-template", {"messages": messages})["prompt"])

    def stream(self, prompt: str, *, n_predict: int, ignore_eos: bool = False, temperature: float = 0.0,
               seed: int = 42, cache_prompt: bool = True) -> StreamedCompletion:
        """Stream one completion of ``prompt``; every token's arrival is timed.

        Raises :class:`JobFailed` on an HTTP error, a stream that stalls past
        ``stall_timeout_s`` or one that ends without the server's final event.
        """
        body = {"prompt": prompt, "n_predict": n_predict, "stream": True, "return_tokens": True,
                "cache_prompt": cache_prompt, "ignore_eos": ignore_eos, "temperature": temperature,
                "seed": seed}
        conn = None
        try:
            conn = self._conn()
            sent = self.now()
            conn.request("POST", "/completion", body=json.dumps(body),
                         headers={"Content-Type": "application/json", "Accept": "text/event-stream"})
            resp = conn.getresponse()
            if resp.status != 200:
                raise JobFailed(f"llama-server /completion answered HTTP {resp.status}: "
                                f"{_error_text(_body(resp, '/completion'))}")
            out = StreamedCompletion(sent_s=sent)
            parts: list[str] = []
            total = 0
            while True:
                line = resp.readline(MAX_EVENT_LINE_BYTES + 1)
                if not line:
                    break
                total += len(line)
                if len(line) > MAX_EVENT_LINE_BYTES:
                    raise OutputTooLargeError("a line of llama-server's /completion stream",
                                              MAX_EVENT_LINE_BYTES)
                if total > MAX_RESPONSE_BYTES:
                    raise OutputTooLargeError("llama-server's /completion stream", MAX_RESPONSE_BYTES)
                at = self.now()
                line = line.strip()
                if not line.startswith(b"data:"):
                    continue
                payload = line[5:].strip()
                if payload == b"[DONE]":
                    break
                event = json.loads(payload)
                if "error" in event:
                    raise JobFailed(f"llama-server stream error: {_error_text(payload)}")
                n = len(event.get("tokens") or [])
                if n == 0 and event.get("content") and not event.get("stop"):
                    n = 1  # a server without return_tokens: one event per token
                out.token_times_s.extend([at] * n)
                parts.append(event.get("content") or "")
                if event.get("stop"):
                    out.done_s = at
                    out.timings = dict(event.get("timings") or {})
                    out.tokens_evaluated = event.get("tokens_evaluated")
                    out.tokens_cached = event.get("tokens_cached")
                    out.stop_type = event.get("stop_type")
                    break
            if not out.done_s:
                raise JobFailed(f"llama-server closed the stream after {len(out.token_times_s)} tokens "
                                "without its final event")
            out.text = "".join(parts)
            return out
        except socket.timeout:
            raise JobFailed(f"stream stalled: no data from llama-server for {self.stall_timeout_s:g} s") from None
        except (OSError, http.client.HTTPException) as exc:
            raise JobFailed(f"llama-server connection failed: {exc or type(exc).__name__}") from None
        except ValueError as exc:
            raise JobFailed(f"llama-server sent an event that is not JSON: {exc}") from None
        finally:
            if conn is not None:
                conn.close()


def _body(resp: http.client.HTTPResponse, path: str) -> bytes:
    """A response's body, at most :data:`MAX_RESPONSE_BYTES`."""
    data = resp.read(MAX_RESPONSE_BYTES + 1)
    if len(data) > MAX_RESPONSE_BYTES:
        raise OutputTooLargeError(f"llama-server's answer to {path}", MAX_RESPONSE_BYTES)
    return data


def _error_text(data: bytes) -> str:
    text = data.decode(errors="replace").strip()
    try:
        err = json.loads(text).get("error")
        if isinstance(err, dict):
            return str(err.get("message") or err)[:300]
    except (ValueError, AttributeError):
        pass
    return text[:300] or "(no body)"

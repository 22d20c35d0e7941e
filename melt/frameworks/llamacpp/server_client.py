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
stream over :data:`MAX_RESPONSE_BYTES` (or the client's own, smaller
bound), fails it with :class:`melt.errors.OutputTooLargeError`.

The same client talks to any OpenAI-compatible endpoint
(:meth:`ServerClient.for_url`: http or https, a bearer key, a path prefix)
through ``/v1/chat/completions`` with ``stream: true``
(:meth:`ServerClient.chat_stream`, chunks read by
:mod:`melt.frameworks.llamacpp.chat_chunks`). Every request records the
network's part apart from the server's: the TCP connection's set-up
(``connect_ms``), the TLS handshake (``tls_ms``) and the host time its
response's first byte arrived (``first_byte_s``). HTTP 429 and 5xx answers
and connections that fail before any token are retried when the client was
given ``retries``, and counted (:attr:`ServerClient.retries_used`).
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator, Mapping
from urllib.parse import urlsplit

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
    connect_ms: float | None = None  # TCP connection set-up (the network's round trip, once)
    tls_ms: float | None = None  # TLS handshake (https only)
    first_byte_s: float | None = None  # the response's status line arrived
    usage: dict[str, Any] | None = None  # the server's own token counts (OpenAI ``usage``), if sent
    attempts: int = 1  # 1 + the retries this request took

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["token_times_s"] = [round(t, 6) for t in self.token_times_s]
        return d


class RetryableError(JobFailed):
    """A request refused before any token (HTTP 429 or 5xx, a failed connection): may be retried."""

    def __init__(self, reason: str, retry_after_s: float | None = None):
        super().__init__(reason)
        self.retry_after_s = retry_after_s


class ServerClient:
    """Talks to one llama-server at ``127.0.0.1:port`` (a forwarded port), or to any
    OpenAI-compatible endpoint (:meth:`for_url`)."""

    def __init__(self, port: int, *, host: str = "127.0.0.1", stall_timeout_s: float = 60.0,
                 tls: ssl.SSLContext | None = None, base_path: str = "",
                 headers: Mapping[str, str] | None = None, label: str = "llama-server",
                 max_response_bytes: int = MAX_RESPONSE_BYTES, retries: int = 0,
                 retry_backoff_s: float = 1.0, max_concurrency: int | None = None,
                 model: str | None = None):
        self.host, self.port = host, int(port)
        self.stall_timeout_s = float(stall_timeout_s)
        self.tls, self.base_path = tls, base_path.rstrip("/")
        self._headers = dict(headers or {})  # may hold a key: never printed, never stored
        self.label = label
        self.max_response_bytes = min(int(max_response_bytes), MAX_RESPONSE_BYTES)
        self.retries, self.retry_backoff_s = int(retries), float(retry_backoff_s)
        self.max_concurrency = max_concurrency
        self.model = model
        self.retries_used = 0
        self._lock = threading.Lock()
        self._wall0, self._perf0 = time.time(), time.perf_counter()

    @classmethod
    def for_url(cls, base_url: str, *, model: str, api_key: str | None = None, timeout_s: float = 60.0,
                verify_tls: bool = True, ca_file: str | None = None, **kw: Any) -> "ServerClient":
        """A client of the OpenAI-compatible API at ``base_url`` (``http(s)://host[:port]/v1``)."""
        parts = urlsplit(base_url)
        tls = None
        if parts.scheme == "https":
            tls = ssl.create_default_context(cafile=ca_file)
            if not verify_tls:
                tls.check_hostname = False
                tls.verify_mode = ssl.CERT_NONE
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return cls(port, host=parts.hostname or "", stall_timeout_s=timeout_s, tls=tls,
                   base_path=parts.path, headers=headers, label=f"endpoint {parts.hostname}",
                   model=model, **kw)

    @property
    def api(self) -> str:
        """``openai`` (chat completions) for an endpoint, ``llama`` for melt's own llama-server."""
        return "openai" if self.model is not None else "llama"

    def now(self) -> float:
        """Host wall-clock time (s) with perf_counter resolution."""
        return self._wall0 + (time.perf_counter() - self._perf0)

    def _open(self, timeout: float | None = None) -> tuple[http.client.HTTPConnection, float, float | None]:
        """A connection, with its TCP set-up and TLS handshake times (s; TLS None over http)."""
        timeout = timeout or self.stall_timeout_s
        t0 = time.perf_counter()
        sock = socket.create_connection((self.host, self.port), timeout=timeout)
        connect_s = time.perf_counter() - t0
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        tls_s = None
        conn: http.client.HTTPConnection
        if self.tls is not None:
            t1 = time.perf_counter()
            try:
                sock = self.tls.wrap_socket(sock, server_hostname=self.host)
            except BaseException:
                sock.close()
                raise
            tls_s = time.perf_counter() - t1
            conn = http.client.HTTPSConnection(self.host, self.port, timeout=timeout, context=self.tls)
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        conn.sock = sock
        return conn, connect_s, tls_s

    def _conn(self, timeout: float | None = None) -> http.client.HTTPConnection:
        return self._open(timeout)[0]

    def _path(self, path: str) -> str:
        return f"{self.base_path}{path}"

    def _body(self, resp: http.client.HTTPResponse, path: str) -> bytes:
        return _body(resp, path, self.max_response_bytes, self.label)

    def _json_headers(self, stream: bool = False) -> dict[str, str]:
        h = {"Content-Type": "application/json", **self._headers}
        if stream:
            h["Accept"] = "text/event-stream"
        return h

    def health(self, timeout: float = 5.0) -> int:
        """HTTP status of ``GET /health`` (200 once the model is loaded, 503 while loading).

        Raises ``OSError`` (or ``http.client.HTTPException``) when nothing answers.
        """
        conn = self._conn(timeout)
        try:
            conn.request("GET", self._path("/health"), headers=self._headers)
            resp = conn.getresponse()
            self._body(resp, "/health")
            return resp.status
        finally:
            conn.close()

    def round_trip_s(self, n: int = 5, path: str = "/health") -> list[float]:
        """Round trips (s) of ``GET path`` on one kept-alive connection: the transport's latency.

        An endpoint answers ``/models`` (after the base path); an answer other
        than 200 there raises :class:`JobFailed` (a refused key is one).
        """
        conn = self._conn(min(10.0, self.stall_timeout_s))
        out = []
        try:
            for _ in range(n):
                t0 = time.perf_counter()
                conn.request("GET", self._path(path), headers=self._headers)
                resp = conn.getresponse()
                data = self._body(resp, path)
                out.append(time.perf_counter() - t0)
                if self.api == "openai" and resp.status != 200:
                    raise JobFailed(f"{self.label} {path} answered HTTP {resp.status}: {_error_text(data)}")
        finally:
            conn.close()
        return out

    def _post_json(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        conn = None
        try:
            conn = self._conn()
            conn.request("POST", self._path(path), body=json.dumps(body), headers=self._json_headers())
            resp = conn.getresponse()
            data = self._body(resp, path)
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
            conn, connect_s, tls_s = self._open()
            sent = self.now()
            conn.request("POST", self._path("/completion"), body=json.dumps(body),
                         headers=self._json_headers(stream=True))
            resp = conn.getresponse()
            first_byte = self.now()
            if resp.status != 200:
                raise JobFailed(f"llama-server /completion answered HTTP {resp.status}: "
                                f"{_error_text(self._body(resp, '/completion'))}")
            out = StreamedCompletion(sent_s=sent, connect_ms=round(1000 * connect_s, 3),
                                     tls_ms=None if tls_s is None else round(1000 * tls_s, 3),
                                     first_byte_s=round(first_byte, 6))
            parts: list[str] = []
            for at, payload in self._events(resp, "llama-server's /completion stream"):
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

    def _events(self, resp: http.client.HTTPResponse, what: str) -> Iterator[tuple[float, bytes]]:
        """(arrival time, payload) of each ``data:`` line of a server-sent event stream, up to
        ``[DONE]`` or the end; a line or a stream over its bound raises :class:`OutputTooLargeError`."""
        total = 0
        while True:
            line = resp.readline(MAX_EVENT_LINE_BYTES + 1)
            if not line:
                return
            total += len(line)
            if len(line) > MAX_EVENT_LINE_BYTES:
                raise OutputTooLargeError(f"a line of {what}", MAX_EVENT_LINE_BYTES)
            if total > self.max_response_bytes:
                raise OutputTooLargeError(what, self.max_response_bytes)
            at = self.now()
            line = line.strip()
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                return
            yield at, payload

    # ------------------------------------------------------- OpenAI-compatible

    def chat_stream(self, messages: list[dict[str, str]], *, n_predict: int, ignore_eos: bool = False,
                    temperature: float = 0.0, seed: int = 42) -> StreamedCompletion:
        """Stream one ``/chat/completions`` answer to ``messages``; every chunk's arrival is timed.

        Retried up to ``retries`` times when refused (HTTP 429, 5xx) or when
        the connection fails before any token. Raises :class:`JobFailed` with
        the HTTP status or the cause otherwise: a refused key, a stream that
        stalls past ``stall_timeout_s``, a chunk that is not JSON or not a
        chunk, a stream that ends before its ``finish_reason``.
        """
        body: dict[str, Any] = {"model": self.model, "messages": messages, "max_tokens": n_predict,
                                "stream": True, "stream_options": {"include_usage": True},
                                "temperature": temperature, "seed": seed}
        if ignore_eos:  # a llama-server extension: only sent when asked for
            body["ignore_eos"] = True
        return self._retrying(lambda: self._chat_once(body))

    def _retrying(self, once: Callable[[], StreamedCompletion]) -> StreamedCompletion:
        attempt = 0
        while True:
            try:
                out = once()
                out.attempts = attempt + 1
                return out
            except RetryableError as exc:
                if attempt >= self.retries:
                    more = f" (after {attempt} {'retry' if attempt == 1 else 'retries'})" if attempt else ""
                    raise JobFailed(f"{exc.reason}{more}") from None
                wait = self.retry_backoff_s * (2 ** attempt)
                if exc.retry_after_s is not None:
                    wait = max(wait, exc.retry_after_s)
                attempt += 1
                with self._lock:
                    self.retries_used += 1
                time.sleep(min(wait, 60.0))

    def _chat_once(self, body: dict[str, Any]) -> StreamedCompletion:
        from melt.frameworks.llamacpp.chat_chunks import ChunkError, read_chunk, retry_after_s

        path, who = "/chat/completions", self.label
        conn = None
        out: StreamedCompletion | None = None
        try:
            try:
                conn, connect_s, tls_s = self._open()
                sent = self.now()
                conn.request("POST", self._path(path), body=json.dumps(body),
                             headers=self._json_headers(stream=True))
                resp = conn.getresponse()
            except socket.timeout:
                raise RetryableError(f"{who} did not answer within {self.stall_timeout_s:g} s") from None
            except (OSError, http.client.HTTPException) as exc:
                raise RetryableError(f"{who} connection failed: {exc or type(exc).__name__}") from None
            first_byte = self.now()
            if resp.status != 200:
                text = _error_text(self._body(resp, path))
                reason = f"{who} {path} answered HTTP {resp.status}: {text}"
                if resp.status == 429 or 500 <= resp.status <= 599:
                    raise RetryableError(reason, retry_after_s(resp.getheader("Retry-After")))
                raise JobFailed(reason)
            out = StreamedCompletion(sent_s=sent, connect_ms=round(1000 * connect_s, 3),
                                     tls_ms=None if tls_s is None else round(1000 * tls_s, 3),
                                     first_byte_s=round(first_byte, 6))
            parts: list[str] = []
            finished = False
            for at, payload in self._events(resp, f"{who}'s stream"):
                chunk = read_chunk(payload)
                if chunk.content:
                    out.token_times_s.append(at)
                    parts.append(chunk.content)
                if chunk.timings is not None:
                    out.timings = chunk.timings
                if chunk.usage is not None:
                    out.usage = chunk.usage
                if chunk.finish_reason is not None and not finished:
                    finished, out.done_s, out.stop_type = True, at, chunk.finish_reason
            if not finished:
                raise JobFailed(f"{who} closed the stream after {len(out.token_times_s)} chunks "
                                "without a finish_reason (truncated)")
            out.text = "".join(parts)
            if out.usage is not None:
                out.tokens_evaluated = out.usage.get("prompt_tokens")
            if out.timings.get("cache_n") is not None:
                out.tokens_cached = out.timings.get("cache_n")
            return out
        except ChunkError as exc:
            raise JobFailed(f"{who} sent a malformed stream: {exc}") from None
        except socket.timeout:
            raise JobFailed(f"stream stalled: no data from {who} for {self.stall_timeout_s:g} s") from None
        except (OSError, http.client.HTTPException) as exc:
            got = len(out.token_times_s) if out is not None else 0
            raise JobFailed(f"{who} connection failed after {got} chunks: {exc or type(exc).__name__}") from None
        finally:
            if conn is not None:
                conn.close()


def _body(resp: http.client.HTTPResponse, path: str, limit: int = MAX_RESPONSE_BYTES,
          who: str = "llama-server") -> bytes:
    """A response's body, at most ``limit`` bytes."""
    data = resp.read(limit + 1)
    if len(data) > limit:
        raise OutputTooLargeError(f"{who}'s answer to {path}", limit)
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

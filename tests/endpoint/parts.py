"""Parts of the endpoint tests: a real llama-server with an API key, a TCP proxy that adds
latency (and can cut a connection), and a scripted OpenAI-compatible server for the failure
modes no real server shows on demand (429, 5xx, garbage, truncation, silence)."""

from __future__ import annotations

import json
import queue
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LlamaServer:
    """melt's cached llama-server build serving ``model`` on loopback with ``--api-key``."""

    def __init__(self, binary: Path, model: Path, key: str, log: Path, *, slots: int = 2,
                 extra: tuple[str, ...] = ()):
        self.port = free_port()
        self.key = key
        self.log = log
        self._out = open(log, "wb")
        self.proc = subprocess.Popen(
            [str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(self.port),
             "--api-key", key, "-c", str(2048 * slots), "-np", str(slots), "-t", "2", "--no-webui",
             "--alias", "gemma", *extra],
            stdin=subprocess.DEVNULL, stdout=self._out, stderr=self._out)
        self._wait()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _wait(self, timeout: float = 120.0) -> None:
        import http.client

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama-server exited: {self.log.read_text(errors='replace')[-500:]}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError("llama-server did not become ready")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._out.close()


class DelayProxy:
    """A TCP proxy on loopback that holds every byte ``delay_s`` in each direction.

    ``upstream_bytes`` counts what the server sent; ``on_upstream(total)`` hears each
    addition (a test can kill the server once a stream is under way).
    """

    def __init__(self, upstream_port: int, delay_s: float,
                 on_upstream: Callable[[int], None] | None = None):
        self.upstream_port, self.delay_s = upstream_port, delay_s
        self.on_upstream = on_upstream
        self.upstream_bytes = 0
        self._lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self._closing = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:
                client.close()
                continue
            for s in (client, server):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._pipe(client, server, count=False)
            self._pipe(server, client, count=True)

    def _pipe(self, src: socket.socket, dst: socket.socket, *, count: bool) -> None:
        held: queue.Queue = queue.Queue()

        def read() -> None:
            while True:
                try:
                    data = src.recv(65536)
                except OSError:
                    data = b""
                held.put((time.monotonic() + self.delay_s, data))
                if not data:
                    return

        def write() -> None:
            while True:
                due, data = held.get()
                time.sleep(max(0.0, due - time.monotonic()))
                if not data:
                    try:
                        dst.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                    return
                try:
                    dst.sendall(data)
                except OSError:
                    return
                if count:
                    with self._lock:
                        self.upstream_bytes += len(data)
                        total = self.upstream_bytes
                    if self.on_upstream is not None:
                        self.on_upstream(total)

        threading.Thread(target=read, daemon=True).start()
        threading.Thread(target=write, daemon=True).start()

    def close(self) -> None:
        self._closing = True
        self.sock.close()


def chunk(content: str | None = None, finish: str | None = None, **extra: Any) -> bytes:
    delta = {"content": content} if content is not None else {}
    body = {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
    return b"data: " + json.dumps(body).encode() + b"\n\n"


class Scripted(BaseHTTPRequestHandler):
    """An OpenAI-compatible server whose behaviour is ``server.script(handler, n)`` for the n-th
    ``/chat/completions`` request; ``/models`` always answers."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        body = b'{"data": [{"id": "stub"}]}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with self.server.lock:  # type: ignore[attr-defined]
            self.server.calls += 1  # type: ignore[attr-defined]
            n = self.server.calls  # type: ignore[attr-defined]
        self.server.headers_seen.append(dict(self.headers))  # type: ignore[attr-defined]
        try:
            self.server.script(self, n)  # type: ignore[attr-defined]
        except (BrokenPipeError, ConnectionResetError):
            pass

    # -- what a script can do
    def answer(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def stream(self, events: list[bytes], gap_s: float = 0.0) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        for i, e in enumerate(events):
            if gap_s and i:
                time.sleep(gap_s)  # between events: the last one ends the answer
            self.wfile.write(e)
            self.wfile.flush()
        self.close_connection = True


def good_stream(tokens: int = 5, usage: bool = True) -> list[bytes]:
    out = [chunk(None, None)] + [chunk(f"t{i} ") for i in range(tokens)] + [chunk(None, "length")]
    if usage:
        out.append(b"data: " + json.dumps({"choices": [], "usage": {
            "prompt_tokens": 7, "completion_tokens": tokens, "total_tokens": 7 + tokens}}).encode() + b"\n\n")
    return out + [b"data: [DONE]\n\n"]


class ScriptedServer:
    """Runs :class:`Scripted` on a free loopback port."""

    def __init__(self, script: Callable[[Scripted, int], None]):
        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
        self.http.daemon_threads = True
        self.http.script = script  # type: ignore[attr-defined]
        self.http.calls = 0  # type: ignore[attr-defined]
        self.http.lock = threading.Lock()  # type: ignore[attr-defined]
        self.http.headers_seen = []  # type: ignore[attr-defined]
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http.server_address[1]}/v1"

    @property
    def calls(self) -> int:
        return self.http.calls  # type: ignore[attr-defined]

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


def endpoint_config(folder: Path, name: str, base_url: str, **endpoint: Any) -> Path:
    """A ``kind: endpoint`` device config in ``folder``; returns its path."""
    import yaml

    spec = {"name": name, "kind": "endpoint",
            "endpoint": {"base_url": base_url, "model": "gemma", "api_key_env": "MELT_TEST_ENDPOINT_KEY",
                         **endpoint}}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def experiment(folder: Path, devices: list[Path], workloads: list[dict[str, Any]], *, repetitions: int = 1,
               name: str = "endpoint-test", model: str = "catalog: gemma3-270m") -> Path:
    """An experiment over ``devices`` with Gemma 3 270M from the catalogue; returns its path."""
    import yaml

    key, value = model.split(": ", 1)
    spec = {"name": name, "devices": [str(d) for d in devices], "models": [{"name": "gemma", key: value}],
            "workloads": workloads, "repetitions": repetitions, "warmup": 0}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path

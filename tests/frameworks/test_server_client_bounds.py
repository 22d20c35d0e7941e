"""A server that streams without end meets a limit: one huge event line, one endless body.

A tiny HTTP server on loopback plays a hostile llama-server; the real
ServerClient talks to it over a real socket.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import pytest

from melt.errors import OutputTooLargeError
from melt.frameworks.llamacpp.server_client import (MAX_EVENT_LINE_BYTES, MAX_RESPONSE_BYTES,
                                                    ServerClient)

BLOCK = b"x" * (1 << 16)


class Hostile(BaseHTTPRequestHandler):
    """By ``server.mode``: ``line`` one event line that never ends, ``events`` endless events,
    ``body`` an endless body."""

    protocol_version = "HTTP/1.0"  # no length: the body ends when the server closes, which it never does

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream" if "completion" in self.path else "application/json")
        self.end_headers()
        try:
            if self.server.mode == "line":
                self.wfile.write(b"data: {\"content\": \"")
                while True:
                    self.wfile.write(BLOCK)
            elif self.server.mode == "events":
                event = b'data: {"content": "' + b"a" * 4000 + b'", "tokens": [1]}\n\n'
                while True:
                    self.wfile.write(event * 16)
            else:
                while True:
                    self.wfile.write(BLOCK)
        except (BrokenPipeError, ConnectionResetError):
            pass


@pytest.fixture
def hostile() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hostile)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_one_endless_event_line_is_refused_at_its_limit(hostile) -> None:
    hostile.mode = "line"
    with pytest.raises(OutputTooLargeError, match="limit of 4 MiB") as caught:
        ServerClient(hostile.server_port, stall_timeout_s=30).stream("hi", n_predict=4)
    assert caught.value.limit == MAX_EVENT_LINE_BYTES and "\n" not in str(caught.value)


def test_an_endless_stream_of_events_is_refused_at_its_limit(hostile) -> None:
    hostile.mode = "events"
    with pytest.raises(OutputTooLargeError, match="limit of 64 MiB") as caught:
        ServerClient(hostile.server_port, stall_timeout_s=30).stream("hi", n_predict=4)
    assert caught.value.limit == MAX_RESPONSE_BYTES


def test_an_endless_json_body_is_refused_at_its_limit(hostile) -> None:
    hostile.mode = "body"
    with pytest.raises(OutputTooLargeError, match="limit of 64 MiB"):
        ServerClient(hostile.server_port, stall_timeout_s=30).apply_template([{"role": "user", "content": "hi"}])


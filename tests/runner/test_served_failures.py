"""A served job's bad cases on this machine, with real processes: the server never
comes up, exits at once, or its stream stalls. Each fails with its reason and
leaves nothing running."""

from __future__ import annotations

import http.server
import os
import socketserver
import sys
import threading
import time
from functools import partial

import pytest

from melt.config.specs import DeviceSpec
from melt.devices.local import LocalDevice
from melt.errors import JobFailed
from melt.frameworks.base import ServedInvocation
from melt.frameworks.llamacpp.driver import LlamaCpp
from melt.frameworks.llamacpp.served import run_client
from melt.frameworks.llamacpp.server_client import ServerClient
from melt.runner.execute import PlainExecutor
from melt.transports.local import LocalTransport


@pytest.fixture
def device(tmp_path):
    return LocalDevice(DeviceSpec(name="here", kind="local", workdir=str(tmp_path / "wd")), LocalTransport())


def served(argv, **params) -> ServedInvocation:
    p = LlamaCpp().validate_params("serve", {"startup_timeout_s": 2, "stall_timeout_s": 1, **params})
    return ServedInvocation(argv=tuple(argv), timeout_s=60, client=partial(run_client, "serve", p))


def alive(pid_file) -> bool:
    try:
        os.kill(int(pid_file.read_text()), 0)
        return True
    except (OSError, ValueError):
        return False


def test_a_server_that_exits_fails_the_job_with_its_last_words(device):
    inv = served(["sh", "-c", "echo 'error: failed to load model /x.gguf' >&2; exit 1"])
    with pytest.raises(JobFailed, match="exited before it listened: error: failed to load model"):
        PlainExecutor().execute(device, inv)


def test_a_server_that_never_listens_times_out_and_is_stopped(device, tmp_path):
    pid_file = tmp_path / "pid"
    inv = served(["sh", "-c", f"echo $$ > {pid_file}; exec sleep 60"])
    t0 = time.monotonic()
    with pytest.raises(JobFailed, match="did not come up within 2 s"):
        PlainExecutor().execute(device, inv)
    assert time.monotonic() - t0 < 15
    assert not alive(pid_file)


class _Stalling(http.server.BaseHTTPRequestHandler):
    """Answers /health, then streams two tokens of a completion and goes silent."""

    def log_message(self, *a):  # quiet
        pass

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for _ in range(2):
            self.wfile.write(b'data: {"content": "a", "tokens": [1], "stop": false}\n\n')
            self.wfile.flush()
        time.sleep(5)


def test_a_stalled_stream_fails_with_the_timeout():
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Stalling)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = ServerClient(server.server_address[1], stall_timeout_s=0.5)
        assert client.health() == 200
        t0 = time.monotonic()
        with pytest.raises(JobFailed, match="stream stalled: no data from llama-server for 0.5 s"):
            client.stream("hi", n_predict=8)
        assert time.monotonic() - t0 < 3
    finally:
        server.shutdown()
        server.server_close()


def test_conversation_index_out_of_range_is_refused_before_anything_runs(tmp_path):
    from tests.helpers import melt

    exp = tmp_path / "e.yaml"
    exp.write_text("name: x\ndevices: [local]\nmodels: [{name: t, tiny_seed: 1}]\n"
                   "workloads: [{name: c, kind: conversation, conversation: 50}]\n")
    out = melt("run", str(exp), "--results", str(tmp_path / "r"))
    assert out.returncode == 1
    assert "workloads[0]: conversation index 50 is out of range: there are 50 (0..49)" in out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "r").exists()

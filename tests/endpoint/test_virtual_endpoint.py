"""``melt virtual start endpoint --detach``: melt's llama-server build on loopback with a fresh key in a
private file (never on a command line), listed and stopped like the other virtual devices."""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
from pathlib import Path

from tests.endpoint.parts import free_port


def melt(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "melt.cli.main", *args], capture_output=True, text=True,
                          env=env, timeout=300)


def status(port: int, key: str | None) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/v1/models", headers={"Authorization": f"Bearer {key}"} if key else {})
    code = conn.getresponse().status
    conn.close()
    return code


def cmdlines() -> list[bytes]:
    out = []
    for p in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            out.append(p.read_bytes())
        except OSError:  # the process ended meanwhile
            pass
    return out


def test_start_key_list_stop(tmp_path, llama_server_binary, gemma_model):
    env = {**os.environ, "MELT_VIRTUAL_STATE_DIR": str(tmp_path / "state")}
    port = free_port()
    started = melt("virtual", "start", "endpoint", "--port", str(port), "--model", str(gemma_model), "--detach",
                   env=env)
    assert started.returncode == 0, started.stderr
    try:
        assert started.stdout.strip() == f"127.0.0.1:{port}"
        assert f"melt virtual key {port}" in started.stderr
        key = melt("virtual", "key", str(port), env=env).stdout.strip()
        assert len(key) > 20 and key not in started.stdout + started.stderr
        key_file = tmp_path / "state" / f"phone-{port}" / "api-key"
        assert key_file.stat().st_mode & 0o077 == 0  # private to its owner
        assert status(port, key) == 200 and status(port, None) == 401 and status(port, "other") == 401
        assert not any(key.encode() in c for c in cmdlines())  # nowhere on a command line
        listed = melt("virtual", "list", env=env).stdout
        assert f"127.0.0.1:{port}" in listed and "endpoint" in listed
    finally:
        stopped = melt("virtual", "stop", f"127.0.0.1:{port}", env=env)
    assert stopped.returncode == 0, stopped.stderr
    assert not key_file.exists()
    try:
        status(port, key)
        raise AssertionError("the server still answers")
    except OSError:
        pass

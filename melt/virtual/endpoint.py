"""A loopback OpenAI-compatible endpoint: melt's own llama-server build serving a model, with an API key.

``melt virtual start endpoint --detach`` runs ``python -m melt.virtual.endpoint``
in the background. That process writes a fresh API key to a private file
(mode 0600, ``STATE_DIR/phone-PORT/api-key``), starts the cached host build's
``llama-server`` on ``127.0.0.1:PORT`` with ``--api-key-file`` (the key is
never on a command line), records itself like the other virtual devices
(``melt virtual list`` / ``stop``) and stops the server when it is stopped.
``melt virtual key PORT`` prints the key, for the environment variable a
device config names. Unlike the virtual phone, nothing here is simulated:
it is a real server on this machine.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from melt.errors import MeltError
from melt.virtual.registry import PhoneRecord, phone_dir, remove_record, write_record

KEY_FILE = "api-key"
DEFAULT_PORT = 18080


class EndpointError(MeltError):
    """The loopback endpoint did not start, or runs nowhere."""


def key_path(state_dir: Path, port: int) -> Path:
    """The private file holding the key of the endpoint on ``port``."""
    return phone_dir(state_dir, port) / KEY_FILE


def read_key(state_dir: Path, port: int) -> str:
    """The API key of the endpoint on ``port``; raises :class:`EndpointError` when there is none."""
    try:
        return key_path(state_dir, port).read_text().strip()
    except OSError:
        raise EndpointError(f"no loopback endpoint key for port {port} (start one: "
                            "melt virtual start endpoint --detach)") from None


def _write_key(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"melt-{secrets.token_urlsafe(24)}\n")
    os.replace(tmp, path)


def start_detached(port: int, state_dir: Path, *, model: str, threads: int, ctx_size: int, slots: int,
                   timeout: float = 120.0) -> str:
    """Start the endpoint in the background; its address once it answers. Raises :class:`EndpointError`."""
    state_dir.mkdir(parents=True, exist_ok=True)
    err_file = state_dir / f"endpoint-{port}-{os.getpid()}.err"
    cmd = [sys.executable, "-m", "melt.virtual.endpoint", "--port", str(port), "--state-dir", str(state_dir),
           "--model", model, "--threads", str(threads), "--ctx-size", str(ctx_size), "--slots", str(slots)]
    with open(err_file, "wb") as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
                                start_new_session=True)
    assert proc.stdout is not None
    import select

    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline().decode().strip() if ready else ""
    if not line:
        proc.kill()
        message = err_file.read_text(errors="replace").strip().splitlines()[-1:] or ["no answer"]
        err_file.unlink(missing_ok=True)
        raise EndpointError(f"the loopback endpoint did not start: {message[0][:300]}")
    err_file.unlink(missing_ok=True)
    return line


def _serve(port: int, state_dir: Path, model: str, threads: int, ctx_size: int, slots: int) -> int:
    from melt.frameworks.llamacpp.build import host_build
    from melt.models.catalog import ensure_model

    path = Path(model) if Path(model).is_file() else ensure_model(model)
    server = host_build(targets=["llama-server"]).binaries["llama-server"]
    folder = phone_dir(state_dir, port)
    folder.mkdir(parents=True, exist_ok=True)
    keys = key_path(state_dir, port)
    _write_key(keys)
    log = open(folder / "llama-server.log", "ab")
    proc = subprocess.Popen([str(server), "-m", str(path), "--host", "127.0.0.1", "--port", str(port),
                             "--api-key-file", str(keys), "-t", str(threads), "-c", str(ctx_size * slots),
                             "-np", str(slots), "--no-webui", "--alias", path.stem],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    stop = {"now": False}

    def on_signal(signum: int, frame: object) -> None:
        stop["now"] = True

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    try:
        deadline = time.monotonic() + 110
        while not _answers(port):
            if proc.poll() is not None or time.monotonic() > deadline or stop["now"]:
                tail = (folder / "llama-server.log").read_text(errors="replace").strip().splitlines()[-1:]
                print(f"llama-server did not come up: {(tail or ['no output'])[0][:300]}", file=sys.stderr)
                return 1
            time.sleep(0.2)
        write_record(PhoneRecord(address=f"127.0.0.1:{port}", port=port, pid=os.getpid(),
                                 started_at=time.time(), root=str(folder), truth_log="", isolation="none",
                                 kind="endpoint", abi="", emulation="native"), state_dir)
        print(f"127.0.0.1:{port}", flush=True)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        while not stop["now"] and proc.poll() is None:
            time.sleep(0.2)
        return 0 if stop["now"] else 1
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()
        remove_record(state_dir, port, os.getpid())
        keys.unlink(missing_ok=True)


def _answers(port: int) -> bool:
    """Whether llama-server on ``port`` has loaded its model (``/health`` is 200)."""
    import http.client

    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/health")
        ok = conn.getresponse().status == 200
        conn.close()
        return ok
    except (OSError, http.client.HTTPException):
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m melt.virtual.endpoint")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--model", default="gemma3-270m", help="a catalogue name or a GGUF file")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ctx-size", type=int, default=4096)
    parser.add_argument("--slots", type=int, default=2)
    args = parser.parse_args(argv)
    try:
        return _serve(args.port or free_port(), Path(args.state_dir), args.model, args.threads, args.ctx_size,
                      args.slots)
    except MeltError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

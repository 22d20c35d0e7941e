"""Helpers shared by the test modules (not fixtures: plain functions)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def in_ci() -> bool:
    """True under CI (``.ci/run`` runs with CI=true): missing parts then fail, never skip."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def need(available: bool, what: str) -> None:
    """Skip the test when ``what`` is missing here, but fail it under CI.

    A part that set-up installs (adb, Chromium, bubblewrap, sshd, redis) and
    that is missing in CI means the set-up is broken: a skip would turn CI
    green without testing anything.
    """
    import pytest

    if available:
        return
    if in_ci():
        pytest.fail(f"{what} is missing under CI: the set-up (make deps) should have installed it",
                    pytrace=False)
    pytest.skip(what)


def melt(*args: str, cwd: Path | None = None, timeout: float = 600, env: dict | None = None,
         **kw) -> subprocess.CompletedProcess:
    """Run the real CLI in a child process, as a user would."""
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    return subprocess.run([sys.executable, "-m", "melt.cli.main", *args], capture_output=True, text=True,
                          cwd=cwd or ROOT, timeout=timeout, env=full_env, **kw)


def melt_child(*args: str, env: dict | None = None, **kw) -> subprocess.Popen:
    """Start the real CLI as a child process with text pipes, for tests that act while it runs."""
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    kw.setdefault("text", True)
    return subprocess.Popen([sys.executable, "-m", "melt.cli.main", *args], cwd=ROOT, env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def show(run_id: str, results: Path) -> dict:
    """``melt results show RUN_ID --json`` as a dict."""
    out = melt("results", "show", run_id, "--json", "--results", str(results))
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


def error_line(done: subprocess.CompletedProcess) -> str:
    """The ``Error: ...`` line of a clean failure of the CLI, checked to be one.

    An uncaught exception also exits 1 and its message is in stderr too, so
    exit code and message alone cannot tell a clean error from a crash: a
    clean one has no traceback and exactly one ``Error:`` line.
    """
    assert done.returncode == 1, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, done.stderr
    return errors[0]


def wait_for_journal(results: Path, lines: int = 1, timeout: float = 300,
                     proc: subprocess.Popen | None = None) -> Path:
    """Wait until a run under ``results`` has journaled ``lines`` jobs; its journal file.

    ``proc``, the ``melt run`` child being watched: when it exits first, fail
    at once with what it printed instead of waiting out ``timeout``.
    """
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for journal in results.glob("*/journal.jsonl"):
            if len(journal.read_text().splitlines()) >= lines:
                return journal
        if proc is not None and proc.poll() is not None:
            err = proc.stderr.read() if proc.stderr else ""
            err = err.decode(errors="replace") if isinstance(err, bytes) else err
            raise AssertionError(f"melt run exited {proc.returncode} before journaling {lines} jobs: "
                                 f"{err[-2000:]}")
        time.sleep(0.05)
    raise AssertionError(f"no run under {results} journaled {lines} jobs within {timeout} s")


def readline(stream, timeout: float = 30.0) -> str:
    """One line from a child's pipe, failing after ``timeout`` s instead of hanging.

    Reads the file descriptor byte by byte (no buffering), so use it for
    every read of that pipe.
    """
    import select
    import time

    fd, data = stream.fileno(), b""
    deadline = time.monotonic() + timeout
    while not data.endswith(b"\n"):
        left = deadline - time.monotonic()
        ready = select.select([fd], [], [], max(0.0, left))[0] if left > 0 else []
        if not ready:
            raise AssertionError(f"no line within {timeout} s (got {data!r})")
        chunk = os.read(fd, 1)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace")

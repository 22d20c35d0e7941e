"""Helpers shared by the test modules (not fixtures: plain functions)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def melt(*args: str, cwd: Path | None = None, timeout: float = 600, env: dict | None = None,
         **kw) -> subprocess.CompletedProcess:
    """Run the real CLI in a child process, as a user would."""
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    return subprocess.run([sys.executable, "-m", "melt.cli.main", *args], capture_output=True, text=True,
                          cwd=cwd or ROOT, timeout=timeout, env=full_env, **kw)


def show(run_id: str, results: Path) -> dict:
    """``melt results show RUN_ID --json`` as a dict."""
    out = melt("results", "show", run_id, "--json", "--results", str(results))
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


def wait_for_journal(results: Path, lines: int = 1, timeout: float = 300) -> Path:
    """Wait until a run under ``results`` has journaled ``lines`` jobs; its journal file."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for journal in results.glob("*/journal.jsonl"):
            if len(journal.read_text().splitlines()) >= lines:
                return journal
        time.sleep(0.05)
    raise AssertionError(f"no run under {results} journaled {lines} jobs within {timeout} s")

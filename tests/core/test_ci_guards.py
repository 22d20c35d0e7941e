"""The guards that keep CI honest: missing parts fail under CI, hangs time out.

Each guard is checked by what it does to a real pytest run: a child pytest
with this project's configuration runs a small test file and its outcome is
read back, as CI would see it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import ROOT, readline


def child_pytest(tmp_path: Path, source: str, *args: str, ci: str | None = None) -> subprocess.CompletedProcess:
    """Run ``source`` as a test file in a child pytest with this project's settings."""
    test = tmp_path / "test_guarded.py"
    test.write_text(source)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    env["PYTHONPATH"] = str(ROOT)  # tests.helpers, as the suite imports it
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-c", str(ROOT / "pyproject.toml"), "--rootdir", str(tmp_path),
         "-p", "no:cacheprovider", "-rA", str(test), *args],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)


MISSING = """
from tests.helpers import need

def test_needs_chromium():
    need(False, "chromium")
"""


def test_missing_part_skips_locally_but_fails_under_ci(tmp_path) -> None:
    local = child_pytest(tmp_path, MISSING)
    assert local.returncode == 0, local.stdout
    assert "1 skipped" in local.stdout and "SKIPPED" in local.stdout and "chromium" in local.stdout
    for value in ("true", "1", "yes"):
        ci = child_pytest(tmp_path, MISSING, ci=value)
        assert ci.returncode == 1, (value, ci.stdout)
        assert "1 failed" in ci.stdout and "chromium is missing under CI" in ci.stdout, ci.stdout
        assert "Traceback" not in ci.stdout  # one line saying what is missing
    off = child_pytest(tmp_path, MISSING, ci="false")  # CI=false is not CI
    assert off.returncode == 0 and "1 skipped" in off.stdout, off.stdout


def test_present_part_runs_the_test_under_ci(tmp_path) -> None:
    ran = child_pytest(tmp_path, "from tests.helpers import need\n\n"
                                 "def test_has_it():\n    need(True, 'chromium')\n    assert False, 'the body ran'\n",
                       ci="true")
    assert ran.returncode == 1 and "the body ran" in ran.stdout, ran.stdout


def test_readline_gives_up_instead_of_hanging() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; print('a', flush=True); time.sleep(30)"],
                            stdout=subprocess.PIPE)
    try:
        assert readline(proc.stdout, timeout=10) == "a\n"
        t0 = time.monotonic()
        with pytest.raises(AssertionError, match="no line within 0.5 s"):
            readline(proc.stdout, timeout=0.5)
        assert time.monotonic() - t0 < 5
    finally:
        proc.kill()
        proc.wait()


TIMERS = """
import signal
import time

def test_plain_test_has_an_alarm_set():
    remaining, _ = signal.getitimer(signal.ITIMER_REAL)
    print("ALARM", remaining)
    assert remaining > 0

def test_hang():
    time.sleep(60)
"""


def test_a_hanging_test_is_stopped_and_fails(tmp_path) -> None:
    # with the project's settings, a test that declares nothing runs under an alarm
    armed = child_pytest(tmp_path, TIMERS, "-s", "-k", "alarm")
    assert armed.returncode == 0 and "1 passed" in armed.stdout, armed.stdout + armed.stderr
    # and when an alarm expires the test fails, and the run goes on to its end
    t0 = time.monotonic()
    hung = child_pytest(tmp_path, TIMERS, "-o", "timeout=2")
    assert time.monotonic() - t0 < 40, hung.stdout
    assert hung.returncode == 1, hung.stdout
    assert "1 failed, 1 passed" in hung.stdout and "Timeout" in hung.stdout, hung.stdout

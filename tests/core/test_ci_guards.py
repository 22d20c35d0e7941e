"""The guards that keep CI honest: missing parts fail under CI, hangs time out."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.helpers import need, readline


def test_missing_part_skips_locally_but_fails_under_ci(monkeypatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception):
        need(False, "chromium")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="chromium is missing under CI"):
        need(False, "chromium")
    need(True, "chromium")  # present: nothing happens


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


def test_every_test_has_a_time_limit(pytestconfig) -> None:
    assert float(pytestconfig.getini("timeout")) > 0

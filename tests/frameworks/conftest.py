"""Fixtures for the llama.cpp tests: one real host build and one tiny model per session.

The build lands in melt's normal cache (``~/.cache/melt`` or ``$MELT_CACHE_DIR``),
so only the first test run on a machine pays for compiling (a few minutes).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from melt.frameworks.base import Invocation


@pytest.fixture(scope="session")
def llamacpp_build():
    """Every binary of the host profile, llama-server included (added if the cached build lacks it)."""
    from melt.frameworks.llamacpp.build import host_build
    from melt.frameworks.llamacpp.recipe import load_recipe

    return host_build(targets=load_recipe().profile("host").targets)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from melt.models.tiny import write_tiny_model

    return write_tiny_model(tmp_path_factory.mktemp("models") / "tiny.gguf", seed=0)


def run_invocation(inv: Invocation) -> subprocess.CompletedProcess:
    """Run an invocation on this machine, as the local transport would."""
    return subprocess.run(
        inv.argv,
        env={**os.environ, **inv.env},
        capture_output=True,
        text=True,
        errors="replace",
        timeout=inv.timeout_s,
        stdin=subprocess.DEVNULL,
    )

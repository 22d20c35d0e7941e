"""Fixtures for the iPhone tests: the host llama.cpp build and the tiny model."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def llamacpp_build():
    from melt.frameworks.llamacpp.build import host_build

    return host_build()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from melt.models.tiny import write_tiny_model

    return write_tiny_model(tmp_path_factory.mktemp("models") / "tiny.gguf", seed=0)

"""Fixtures for the model tests (the host build is shared through melt's build cache)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def llamacpp_build():
    from melt.frameworks.llamacpp.build import host_build

    return host_build()


from tests.conftest_models import gemma_model  # noqa: E402,F401

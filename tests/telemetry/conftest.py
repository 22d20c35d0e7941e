"""Fixtures of the telemetry tests: the shared adb server and phones of tests/conftest_virtual.py,
the llama.cpp host build and the real model (Gemma 3 270M)."""

import pytest

from tests.conftest_models import gemma_model  # noqa: F401
from tests.conftest_virtual import adb_server, virtual_phone_factory  # noqa: F401


@pytest.fixture(scope="session")
def llamacpp_build():
    from melt.frameworks.llamacpp.build import host_build

    return host_build()

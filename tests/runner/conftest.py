from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def llamacpp_host_build():
    """The real host build of llama.cpp (built once, then cached under ~/.cache/melt)."""
    from melt.frameworks.llamacpp.build import host_build

    return host_build()

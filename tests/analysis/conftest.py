"""Synthetic results folders for the analysis tests."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from melt.analysis import synthetic as syn
from melt.store.runs import ResultsStore


@pytest.fixture
def store(tmp_path) -> ResultsStore:
    return ResultsStore(tmp_path / "results")


@pytest.fixture
def cells() -> list[syn.Cell]:
    return syn.grid()


def nightly(store: ResultsStore, cells, *, slow: dict[str, float] | None = None, history: int = 6,
            reps: int = 5):
    """``history`` nightly runs, then one current run with ``slow`` factors; returns (history, current)."""
    runs = syn.make_history(store, cells, history, repetitions=reps, noise=0.01, seed=10)
    current = syn.make_run(store, cells, repetitions=reps, noise=0.01, seed=999, factors=slow or {},
                           created_at=datetime(2026, 2, 1, 2, 0, tzinfo=timezone.utc), name="nightly")
    return runs, current


from tests.conftest_models import gemma_model  # noqa: E402,F401


@pytest.fixture(scope="session")
def llamacpp_host_build():
    """The real host build of llama.cpp (built once, then cached under ~/.cache/melt)."""
    from melt.frameworks.llamacpp.build import host_build

    return host_build()


@pytest.fixture(scope="session")
def llamacpp_source():
    """The unpacked llama.cpp tree melt builds from (the pinned source, cached)."""
    from melt.frameworks.llamacpp.recipe import load_recipe
    from melt.frameworks.llamacpp.source import obtain_source, parse_source

    recipe = load_recipe()
    return obtain_source(parse_source(None, recipe), recipe).path

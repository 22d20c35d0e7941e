"""Shared helpers for the parser tests: fixture loading."""

from __future__ import annotations

from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parent.parent / "data" / "parsers"


def read(name: str) -> str:
    """Text of a capture under tests/data/parsers (undecodable bytes replaced)."""
    return (DATA / name).read_bytes().decode("utf-8", errors="replace")


def captures(prefix: str = "") -> list[str]:
    """Names of every capture (not its .source.txt note) starting with ``prefix``."""
    return sorted(
        p.name for p in DATA.iterdir()
        if p.is_file() and p.name.startswith(prefix) and not p.name.endswith(".source.txt")
        and p.name != "README.md"
    )


@pytest.fixture
def data_dir() -> Path:
    return DATA

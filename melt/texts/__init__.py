"""Texts shipped with melt for quality jobs, by name.

A quality workload's ``text:`` is a file path or one of these names. Each is
natural English in the public domain; ``SOURCE.md`` beside them says where
it comes from, what was cut and its sha256.
"""

from __future__ import annotations

from pathlib import Path

from melt.errors import UnknownNameError

_HERE = Path(__file__).parent

#: the text a quality workload uses when it names none
DEFAULT_TEXT = "kjv-genesis"


def names() -> list[str]:
    """The names of the shipped texts."""
    return sorted(p.stem for p in _HERE.glob("*.txt"))


def text_path(name: str) -> Path:
    """The file of the shipped text ``name``; :class:`UnknownNameError` for another name."""
    path = _HERE / f"{name}.txt"
    if name not in names():
        raise UnknownNameError("shipped text", name, names())
    return path

"""Which frameworks melt knows, by name.

Built-in drivers sit in a lazy ``name -> "module:Class"`` mapping, imported
only when asked for. Other packages add theirs through the entry-point group
``melt.frameworks`` (``[project.entry-points."melt.frameworks"]
mlc = "melt_mlc:MlcLlm"``); a built-in name wins over an entry point.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any

from melt.errors import UnknownNameError

ENTRY_POINT_GROUP = "melt.frameworks"

BUILTIN: dict[str, str] = {
    "llama.cpp": "melt.frameworks.llamacpp.driver:LlamaCpp",
    "mlc-llm": "melt.frameworks.mlc.driver:MlcLlm",
}


def _entry_points() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available_frameworks() -> list[str]:
    """Every framework name, built-in and from entry points, sorted."""
    return sorted(set(BUILTIN) | set(_entry_points()))


def get_framework(name: str) -> Any:
    """A new driver instance for ``name``.

    Raises :class:`UnknownNameError` (with "Did you mean: ...?") for an
    unknown name.
    """
    target = BUILTIN.get(name)
    if target is not None:
        module_name, _, attr = target.partition(":")
        cls = getattr(importlib.import_module(module_name), attr)
        return cls()
    ep = _entry_points().get(name)
    if ep is None:
        raise UnknownNameError("framework", name, available_frameworks())
    return ep.load()()

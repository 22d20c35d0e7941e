"""llama.cpp: recipe, source, build and driver."""

from __future__ import annotations

from melt.frameworks.llamacpp.driver import LlamaCpp

__all__ = ["LlamaCpp"]

"""Framework build recipes and drivers (llama.cpp, and more through entry points)."""

from __future__ import annotations

from melt.frameworks.base import Build, Framework, Invocation
from melt.frameworks.registry import available_frameworks, get_framework

__all__ = ["Build", "Framework", "Invocation", "available_frameworks", "get_framework"]

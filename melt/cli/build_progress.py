"""Read how far a llama.cpp build has got from its output lines."""

from __future__ import annotations

import re
from dataclasses import dataclass

_MAKE = re.compile(r"^\[\s*(\d{1,3})%\]\s+(.*)$")  # CMake's Makefile generator: "[ 42%] Building ..."
_NINJA = re.compile(r"^\[(\d+)/(\d+)\]\s+(.*)$")  # Ninja: "[12/345] Building ..."
_TARGET = re.compile(r"(?:Built target|Linking \w+ (?:executable|(?:static |shared )?library))\s+(\S+)")
_OBJECT = re.compile(r"Building \w+ object (?:\S*/)?CMakeFiles/([^/\s]+)\.dir/")


@dataclass
class BuildStep:
    """One step of a build: ``percent`` done (``None`` when the line gives none) and what it is doing."""

    percent: float | None
    doing: str


def build_step(line: str) -> BuildStep | None:
    """The step a build output line reports, or ``None`` for lines that report none."""
    line = line.strip()
    make, ninja = _MAKE.match(line), _NINJA.match(line)
    if make:
        percent: float | None = min(float(make.group(1)), 100.0)
        rest = make.group(2)
    elif ninja and int(ninja.group(2)) > 0:
        percent = min(100.0 * int(ninja.group(1)) / int(ninja.group(2)), 100.0)
        rest = ninja.group(3)
    else:
        return None
    target = _TARGET.search(rest) or _OBJECT.search(rest)
    return BuildStep(percent, target.group(1) if target else rest[:60])


def step_bar(percent: float | None, width: int = 20) -> str:
    """``"[#####---------------]  25%"`` for a known share done; ``"…"`` when unknown."""
    if percent is None:
        return "…"
    filled = int(round(width * percent / 100))
    return f"[{'#' * filled}{'-' * (width - filled)}] {percent:3.0f}%"

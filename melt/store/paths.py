"""Where melt keeps things on the host."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Build cache, downloaded sources, generated models: ``$MELT_CACHE_DIR`` or ``~/.cache/melt``."""
    return Path(os.environ.get("MELT_CACHE_DIR") or Path.home() / ".cache" / "melt").expanduser()


def default_results_dir() -> Path:
    """``$MELT_RESULTS_DIR`` or ``./results``."""
    return Path(os.environ.get("MELT_RESULTS_DIR") or "results")


def config_dir() -> Path:
    """melt's own settings (SSH known hosts and key): ``$MELT_CONFIG_DIR`` or ``~/.config/melt``."""
    env = os.environ.get("MELT_CONFIG_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base).expanduser() / "melt"

"""Where melt keeps things on the host."""

from __future__ import annotations

import os
from pathlib import Path

from melt.errors import UnsafePathError


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


def confined(base: Path, name: str) -> Path:
    """``base / name`` for a ``name`` that came from outside (a device's listing, another host).

    ``name`` must be one plain file name: not empty, not ``.`` or ``..``, no
    ``/`` or ``\\``, no NUL or other control character, and ``base / name``
    must not already be a symlink (writing or reading through it would reach
    outside ``base``). Raises :class:`~melt.errors.UnsafePathError` saying which
    rule the name broke.
    """
    text = str(name)
    if not text or text in (".", ".."):
        why = "is not a file name"
    elif text.startswith("/"):
        why = "is an absolute path"
    elif "/" in text or "\\" in text:
        why = "names a path, not a file" if ".." not in text.replace("\\", "/").split("/") else "climbs out with '..'"
    elif any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        why = "holds a control character"
    else:
        path = Path(base) / text
        if not path.is_symlink():
            return path
        why = "is a symlink"
    raise UnsafePathError(f"refused the name {text!r} for a file in {base}: it {why}")

"""Where melt keeps downloads, unpacked sources and builds on this machine."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from pathlib import Path
from typing import Iterator


def cache_root() -> Path:
    """``$MELT_CACHE_DIR`` when set, else ``~/.cache/melt``."""
    explicit = os.environ.get("MELT_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    return Path.home() / ".cache" / "melt"


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` (created) for the ``with`` body.

    Two melt processes preparing the same cache entry wait for each other
    instead of racing; the lock goes away with the process if it dies.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def publish_dir(tmp: Path, final: Path) -> None:
    """Move a fully written ``tmp`` folder to ``final`` in one rename.

    A reader that sees ``final`` sees it complete; anything at ``final``
    before (an older entry being replaced) is removed first.
    """
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)

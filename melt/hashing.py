"""sha256 of files, the one way melt identifies models, sources and binaries."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_sha256(path: Path | str, *, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in ``chunk``-byte blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()

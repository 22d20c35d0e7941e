"""sha256 of model files, computed once per content.

Hashing a 4 GB model takes seconds, so the result is remembered in
``$MELT_CACHE_DIR/sha256.json`` under the file's resolved path, size and
modification time (ns): a file that changes in any of them is hashed again.
"""

from __future__ import annotations

import json
from pathlib import Path

from melt.hashing import file_sha256
from melt.store.atomic import atomic_write_json
from melt.store.paths import cache_dir

MEMO_ENTRIES = 2000  # the memo keeps the newest this many files


def _memo_file() -> Path:
    return cache_dir() / "sha256.json"


def _key(path: Path) -> tuple[Path, str]:
    path = Path(path).resolve()
    st = path.stat()
    return path, f"{path}:{st.st_size}:{st.st_mtime_ns}"


def _load() -> dict[str, str]:
    try:
        memo = json.loads(_memo_file().read_text())
    except (OSError, ValueError):
        return {}
    return memo if isinstance(memo, dict) else {}


def remember_sha256(path: Path, sha256: str) -> None:
    """Record that ``path`` (as it is now: size and mtime) has ``sha256``."""
    _path, key = _key(path)
    memo = _load()
    memo.pop(key, None)
    memo[key] = sha256
    if len(memo) > MEMO_ENTRIES:
        memo = dict(list(memo.items())[-MEMO_ENTRIES // 2:])
    try:
        atomic_write_json(_memo_file(), memo)
    except OSError:  # a read-only cache only costs a re-hash next time
        pass


def sha256_file(path: Path, *, remember: bool = True) -> str:
    """Hex sha256 of ``path``, remembered by (path, size, mtime_ns).

    Raises ``OSError`` when the file cannot be read.
    """
    path, key = _key(path)
    known = _load().get(key)
    if isinstance(known, str) and len(known) == 64:
        return known
    digest = file_sha256(path, chunk=4 << 20)
    if remember:
        remember_sha256(path, digest)
    return digest


def forget_sha256(path: Path) -> None:
    """Drop what is remembered about ``path`` (any size or mtime)."""
    prefix = f"{Path(path).resolve()}:"
    memo = _load()
    kept = {k: v for k, v in memo.items() if not k.startswith(prefix)}
    if len(kept) != len(memo):
        try:
            atomic_write_json(_memo_file(), kept)
        except OSError:
            pass


__all__ = ["sha256_file", "remember_sha256", "forget_sha256"]

"""Turn model references into files on this machine, with their sha256."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from melt.config.specs import ModelRef
from melt.errors import ConfigError
from melt.hashing import file_sha256
from melt.store.atomic import atomic_write_json
from melt.store.paths import cache_dir


@dataclass(frozen=True)
class ResolvedModel:
    ref: ModelRef
    path: Path
    sha256: str
    size_bytes: int
    n_params: int | None = None

    def provenance(self) -> dict:
        return {
            "name": self.ref.name,
            "path": str(self.path),
            "sha256": self.sha256,
            "size_bytes": self.size_bytes,
            "n_params": self.n_params,
            "quantization": self.ref.quantization,
            "generated_tiny_seed": self.ref.tiny_seed,
        }


def gguf_n_params(path: Path) -> int | None:
    """Number of weights in a GGUF file (sum over its tensors); ``None`` if it is not GGUF."""
    try:
        from gguf import GGUFReader

        return int(sum(int(t.n_elements) for t in GGUFReader(str(path), "r").tensors))
    except Exception:  # not GGUF, or a version the reader does not know: unknown, not 0
        return None


def sha256_file(path: Path, *, chunk: int = 1 << 20) -> str:
    """sha256 of a file, remembered by (path, size, mtime) so big models hash once."""
    path = Path(path).resolve()
    st = path.stat()
    memo_file = cache_dir() / "sha256.json"
    key = f"{path}:{st.st_size}:{st.st_mtime_ns}"
    try:
        memo = json.loads(memo_file.read_text())
    except (OSError, ValueError):
        memo = {}
    if key in memo:
        return memo[key]
    memo[key] = file_sha256(path, chunk=chunk)
    if len(memo) > 2000:  # keep the memo small
        memo = dict(list(memo.items())[-1000:])
    atomic_write_json(memo_file, memo)
    return memo[key]


def tiny_model_path(seed: int) -> Path:
    """Where the tiny model of ``seed`` lives in the cache (made on first use)."""
    path = cache_dir() / "models" / f"tiny-seed{seed}.gguf"
    if not path.is_file():
        from melt.models.tiny import write_tiny_model

        write_tiny_model(path, seed=seed)
    return path


def resolve_model(ref: ModelRef, *, base: Path, source: str, index: int) -> ResolvedModel:
    """Find or make the file of ``ref``; a missing file is a ``ConfigError``."""
    if ref.tiny_seed is not None:
        path = tiny_model_path(ref.tiny_seed)
    else:
        path = Path(ref.path).expanduser()
        if not path.is_absolute():
            path = base / path
        if not path.is_file():
            raise ConfigError(source, [f"models[{index}].path: model file not found: {path}"])
    return ResolvedModel(ref, path.resolve(), sha256_file(path), path.stat().st_size, gguf_n_params(path))

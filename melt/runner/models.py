"""Turn model references into files on this machine, with their sha256 and facts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from melt.config.specs import ModelRef
from melt.errors import ConfigError, ModelFetchError, UnknownNameError
from melt.models.gguf_facts import GGUFFacts, gguf_facts
from melt.models.hashes import sha256_file
from melt.store.paths import cache_dir


@dataclass(frozen=True)
class ResolvedModel:
    ref: ModelRef
    path: Path
    sha256: str
    size_bytes: int
    n_params: int | None = None
    facts: GGUFFacts | None = None
    extra: dict | None = None  # provenance of a catalogue model or a quantized variant

    def provenance(self) -> dict:
        out = {
            "name": self.ref.name,
            "path": str(self.path),
            "sha256": self.sha256,
            "size_bytes": self.size_bytes,
            "n_params": self.n_params,
            "quantization": self.ref.quantization or (self.facts.file_type if self.facts else None),
            "generated_tiny_seed": self.ref.tiny_seed,
        }
        if self.facts is not None:
            out["architecture"] = self.facts.architecture
            out["file_type"] = self.facts.file_type
        if self.ref.catalog is not None:
            out["catalog"] = self.ref.catalog
        if self.extra:
            out.update(self.extra)
        return out


def gguf_n_params(path: Path) -> int | None:
    """Number of weights in a GGUF file (from its tensor infos); ``None`` if it is not GGUF."""
    facts = gguf_facts(path)
    return facts.n_params if facts else None


def tiny_model_path(seed: int) -> Path:
    """Where the tiny model of ``seed`` lives in the cache (made on first use)."""
    path = cache_dir() / "models" / f"tiny-seed{seed}.gguf"
    if not path.is_file():
        from melt.models.tiny import write_tiny_model

        write_tiny_model(path, seed=seed)
    return path


def resolve_model(ref: ModelRef, *, base: Path, source: str, index: int) -> ResolvedModel:
    """Find, fetch or make the file of ``ref``.

    A missing file or an unknown catalogue name is a ``ConfigError``; a
    catalogue model that cannot be fetched raises ``ModelFetchError``.
    """
    extra: dict = {}
    if ref.tiny_seed is not None:
        path = tiny_model_path(ref.tiny_seed)
    elif ref.catalog is not None:
        from melt.models.catalog import ensure_model, lookup

        try:
            entry = lookup(ref.catalog)
        except UnknownNameError as exc:
            raise ConfigError(source, [f"models[{index}].catalog: {exc}"]) from None
        try:
            path = ensure_model(ref.catalog)
        except ModelFetchError as exc:
            raise ModelFetchError(f"models[{index}] ({ref.catalog}): {exc}") from None
        extra = {"licence": entry.licence, "source": entry.source.describe()}
    else:
        path = Path(ref.path).expanduser()
        if not path.is_absolute():
            path = base / path
        if not path.is_file():
            raise ConfigError(source, [f"models[{index}].path: model file not found: {path}"])
    path = path.resolve()
    from melt.models.provenance import read_provenance

    made = read_provenance(path)
    if made:  # a variant melt made: what from, and whether it was requantized
        extra["variant"] = made
        extra["requantized_from"] = made.get("requantized_from")
    facts = gguf_facts(path)
    return ResolvedModel(ref, path, sha256_file(path), path.stat().st_size,
                         facts.n_params if facts else None, facts, extra or None)

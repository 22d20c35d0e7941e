"""A sidecar file beside a model that says what it was made from.

``model.gguf`` made by ``melt model quantize`` gets ``model.gguf.melt.json``
with the source's name and sha256, the type, the tool's build, and
``requantized_from`` when the source was already quantized (its speed is
real, its quality is not the original's).
"""

from __future__ import annotations

import json
from pathlib import Path

from melt.store.atomic import atomic_write_json

SUFFIX = ".melt.json"


def provenance_path(model: Path) -> Path:
    return Path(model).with_name(Path(model).name + SUFFIX)


def write_provenance(model: Path, data: dict) -> Path:
    """Write ``data`` beside ``model``; returns the sidecar's path."""
    out = provenance_path(model)
    atomic_write_json(out, data)
    return out


def read_provenance(model: Path) -> dict | None:
    """What the sidecar of ``model`` says, or ``None`` without one (or an unreadable one)."""
    try:
        data = json.loads(provenance_path(model).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None

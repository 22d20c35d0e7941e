"""The shape of stored results, and how older shapes are brought forward.

``SCHEMA_VERSION`` is an integer separate from melt's version. A run folder
written by a newer melt is refused with a clear error; an older one goes
through ``migrate_to_N`` steps on load. Keep a golden file of every version in
``tests/data/results/vN/``.
"""

from __future__ import annotations

from typing import Any, Callable

from melt.errors import ResultsError

SCHEMA_VERSION = 1

#: Fields of a job record, in the order they are written.
JOB_FIELDS = (
    "job_id",
    "cell_id",
    "status",
    "reason",
    "device",
    "framework",
    "model",
    "workload",
    "kind",
    "params",
    "repetition",
    "simulated",
    "emulated",
    "started_at",
    "finished_at",
    "metrics",
    "provenance",
)

# version N -> function taking a version N-1 manifest to version N.
MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}


def upgrade_manifest(manifest: dict[str, Any], source: str) -> dict[str, Any]:
    """Bring ``manifest`` to ``SCHEMA_VERSION`` or raise ``ResultsError``."""
    version = manifest.get("schema_version")
    if not isinstance(version, int) or version < 1:
        raise ResultsError(f"{source}: no valid schema_version")
    if version > SCHEMA_VERSION:
        raise ResultsError(
            f"{source}: written with results schema {version}, this melt reads up to "
            f"{SCHEMA_VERSION}; upgrade melt to read it"
        )
    while version < SCHEMA_VERSION:
        version += 1
        manifest = MIGRATIONS[version](manifest)
        manifest["schema_version"] = version
    return manifest

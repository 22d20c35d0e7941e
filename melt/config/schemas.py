"""File kinds with a published JSON Schema (``melt schema KIND``).

Kept apart from the specs so that the CLI can list the kinds without
importing pydantic models.
"""

from __future__ import annotations

#: kind -> "module:Class" of the pydantic model describing that file.
SCHEMAS: dict[str, str] = {
    "experiment": "melt.config.specs:ExperimentSpec",
    "device": "melt.config.specs:DeviceSpec",
    "recipe": "melt.frameworks.llamacpp.recipe:Recipe",
}

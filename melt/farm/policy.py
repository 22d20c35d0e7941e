"""What a farm worker's host agrees to build and run, whatever a job message asks.

A signed message still comes from another host, so the worker decides:

- a framework source is built only when it is the recipe's pinned default
  (no ``source:``, or a ``pypi:`` sdist whose sha256 is the recipe's pin) or
  its exact text is on this worker's own list (``melt farm worker
  --allow-source``), so no message names a git repository, a folder or an
  archive that this host then builds and runs;
- ``binaries:`` (a folder of prebuilt programs) is refused: a worker runs only
  what it built itself;
- model files are looked up by sha256 in the worker's own models folder
  (``--models``), never at a path the message names; catalogue models are
  fetched into the worker's cache by their pinned sha256 and size, and tiny
  models are made on the worker.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from melt.errors import BuildError, MeltError

#: Environment variable holding a worker's extra allowed sources, one a line (set by the supervisor).
ALLOWED_SOURCES_ENV = "MELT_FARM_ALLOWED_SOURCES"
#: Environment variable holding the worker's models folder (set by the supervisor).
MODELS_DIR_ENV = "MELT_FARM_MODELS_DIR"


def default_models_dir() -> Path:
    """``<cache>/farm/models``: where a worker looks for the model files of ``path:`` models."""
    from melt.store.paths import cache_dir

    return cache_dir() / "farm" / "models"


def worker_allowed_sources() -> tuple[str, ...]:
    """The extra sources this worker's operator allows (from the supervisor's environment)."""
    return tuple(line.strip() for line in os.environ.get(ALLOWED_SOURCES_ENV, "").splitlines() if line.strip())


def worker_models_dir() -> Path:
    """This worker's models folder (from the supervisor's environment, else the default)."""
    env = os.environ.get(MODELS_DIR_ENV)
    return Path(env) if env else default_models_dir()


def is_pinned_default(source: str | None) -> bool:
    """Whether ``source`` is the llama.cpp recipe's own pinned sdist (or no source at all)."""
    if source is None:
        return True
    if source != "pypi" and not source.startswith("pypi:"):
        return False
    from melt.frameworks.llamacpp.recipe import load_recipe
    from melt.frameworks.llamacpp.source import parse_source

    try:
        recipe = load_recipe()
        ref = parse_source(source, recipe)
    except (BuildError, MeltError, ValueError):
        return False
    pin = recipe.source.pypi
    return pin is not None and bool(pin.sha256) and ref.kind == "pypi" and ref.sha256 == pin.sha256 \
        and ref.package == pin.package


def refusals(experiment: object, allowed_sources: Iterable[str]) -> list[str]:
    """Why this worker will not run ``experiment``'s jobs (empty: it will)."""
    allowed = set(allowed_sources)
    problems = []
    for i, fw in enumerate(getattr(experiment, "frameworks", [])):
        if fw.binaries is not None:
            problems.append(f"frameworks[{i}].binaries: a farm worker runs only what it builds itself, "
                            "not a folder of prebuilt binaries")
        if not is_pinned_default(fw.source) and fw.source not in allowed:
            problems.append(f"frameworks[{i}].source: {fw.source!r} is not the pinned source and not on this "
                            "worker's list (melt farm worker --allow-source)")
    return problems


def find_model(folder: Path, sha256: str) -> Path | None:
    """The regular file in ``folder`` (not in sub-folders) whose sha256 is ``sha256``, if there is one."""
    from melt.models.hashes import sha256_file

    try:
        entries = sorted(Path(folder).iterdir())
    except OSError:
        return None
    for path in entries:
        try:
            if path.is_file() and sha256_file(path) == sha256:
                return path
        except OSError:
            continue
    return None

"""The MLC-LLM recipe: ``frameworks/mlc-llm/recipe.yaml`` as frozen objects.

MLC compiles each model ahead of time for one target; the recipe lists the
toolchain every profile needs, each profile's compile device and its own
requirements, and the ``stand-in`` profile used where MLC cannot run.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from melt.errors import ConfigError, UnknownNameError
from melt.frameworks.llamacpp.recipe import Requirement, frameworks_dir, read_recipe_mapping


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Runtime(_Frozen):
    """The native program melt runs on the device."""

    cmake_target: str
    binary: str


class MlcProfile(_Frozen):
    """One target: MLC's compile device and what it needs, or the stand-in."""

    name: str = ""
    description: str = ""
    device: str | None = Field(None, description="`mlc_llm compile --device` value")
    requires: tuple[Requirement, ...] = ()
    stand_in: bool = False
    llamacpp_profile: str | None = Field(
        None, description="stand-in only: the llama.cpp profile doing the work; auto: the device's")


class MlcRecipe(_Frozen):
    schema_version: Literal[1] = 1
    name: str
    root: Path
    compile: tuple[tuple[str, ...], ...]
    runtime: Runtime
    toolchain: tuple[Requirement, ...] = ()
    profiles: dict[str, MlcProfile]

    def profile(self, name: str) -> MlcProfile:
        """The named profile; :class:`UnknownNameError` for a name the recipe lacks."""
        try:
            prof = self.profiles[name]
        except KeyError:
            raise UnknownNameError("MLC-LLM build profile", name, list(self.profiles)) from None
        return prof.model_copy(update={"name": name})

    def problems(self, name: str) -> list[str]:
        """What is missing on this machine to build ``name`` (empty: nothing)."""
        prof = self.profile(name)
        if prof.stand_in:
            return []
        reqs = [*self.toolchain, *prof.requires]
        return [p for p in (r.problem() for r in reqs) if p]

    def compile_commands(self, name: str, *, src: str, quant: str, out: str, template: str) -> list[list[str]]:
        """The argv lists that compile one model for profile ``name``."""
        device = self.profile(name).device or ""
        values = {"src": src, "quant": quant, "out": out, "template": template, "device": device}
        return [[part.format(**values) for part in step] for step in self.compile]


def recipe_dir() -> Path:
    """``$MELT_FRAMEWORKS_DIR/mlc-llm`` or the source checkout's ``frameworks/mlc-llm``."""
    return frameworks_dir("mlc-llm")


def load_recipe(path: Path | None = None) -> MlcRecipe:
    """Load and validate the recipe; :class:`ConfigError` names the file and fields."""
    path = Path(path) if path is not None else recipe_dir() / "recipe.yaml"
    return _load(path.resolve())


@lru_cache(maxsize=4)
def _load(path: Path) -> MlcRecipe:
    try:
        return MlcRecipe.model_validate(read_recipe_mapping(path))
    except ValidationError as exc:
        raise ConfigError(str(path), [".".join(map(str, e["loc"])) + ": " + e["msg"] for e in exc.errors()]) from None

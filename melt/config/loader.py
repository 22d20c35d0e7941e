"""Read YAML files into specs, with errors that name the file and the field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from melt.config.errors import problems_from
from melt.config.schemas import SCHEMAS
from melt.config.specs import DeviceSpec, ExperimentSpec
from melt.errors import ConfigError, UnknownNameError

T = TypeVar("T", bound=BaseModel)

def repo_root() -> Path:
    """The folder holding ``device_configs/`` (a checkout, or the current directory)."""
    here = Path(__file__).resolve().parents[2]
    if (here / "device_configs").is_dir():
        return here
    return Path.cwd()


def read_yaml(path: Path) -> dict:
    """Parse a YAML mapping; a missing file or bad syntax is a ``ConfigError``."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), ["file not found"]) from None
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[:exc.start].count(b"\n") + 1
        raise ConfigError(str(path), [f"line {line}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x}); "
                                      "save the file as UTF-8"]) from None
    except OSError as exc:
        raise ConfigError(str(path), [exc.strerror or str(exc)]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(str(path), [f"{where}invalid YAML: {problem}"]) from None
    if not isinstance(data, dict):
        raise ConfigError(str(path), ["expected a mapping of fields at the top level"])
    return data


def validate(model: type[T], data: dict, source: str) -> T:
    """Build ``model`` from ``data``; errors become ``ConfigError(source, ...)``."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, problems_from(exc)) from None


def load_experiment(path: str | Path) -> ExperimentSpec:
    """Load and validate an experiment file."""
    p = Path(path)
    return validate(ExperimentSpec, read_yaml(p), str(path))


def device_config_dirs() -> list[Path]:
    """Where device configs are looked up by name, first match wins."""
    return [Path.cwd() / "device_configs", repo_root() / "device_configs"]


def available_devices() -> list[str]:
    names: set[str] = set()
    for d in device_config_dirs():
        if d.is_dir():
            names.update(p.stem for p in d.glob("*.yaml"))
    return sorted(names)


def load_device(ref: str, *, relative_to: Path | None = None) -> DeviceSpec:
    """Load a device config by name (``device_configs/NAME.yaml``) or by path."""
    candidates: list[Path] = []
    if ref.endswith((".yaml", ".yml")) or "/" in ref:
        p = Path(ref)
        candidates = [p] if p.is_absolute() else [(relative_to or Path.cwd()) / p, Path.cwd() / p]
    else:
        candidates = [d / f"{ref}.yaml" for d in device_config_dirs()]
    for c in candidates:
        if c.is_file():
            return validate(DeviceSpec, read_yaml(c), str(c))
    if ref.endswith((".yaml", ".yml")) or "/" in ref:
        raise ConfigError(ref, ["file not found"])
    raise UnknownNameError("device", ref, available_devices())


def json_schema(kind: str) -> str:
    """The JSON Schema of a file kind, for editors to autocomplete."""
    if kind not in SCHEMAS:
        raise UnknownNameError("schema kind", kind, list(SCHEMAS))
    import importlib

    module, cls = SCHEMAS[kind].split(":")
    schema = getattr(importlib.import_module(module), cls).model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = f"melt {kind}"
    return json.dumps(schema, indent=2)

"""Config files: valid ones load into frozen specs, bad ones name file and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from melt.config.loader import json_schema, load_device, load_experiment
from melt.errors import ConfigError, UnknownNameError

GOOD = """
name: x
devices: [local]
models: [{name: tiny, tiny_seed: 0}]
workloads:
  - {kind: bench, name: b, n_prompt: [16, 32], n_gen: 8}
  - {kind: generate, name: g, prompt: hi}
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "x.yaml"
    p.write_text(text)
    return p


def test_good_experiment_loads_with_scalars_as_lists(tmp_path):
    exp = load_experiment(write(tmp_path, GOOD))
    assert exp.workloads[0].n_prompt == [16, 32]
    assert exp.workloads[0].n_gen == [8]
    assert exp.workloads[1].prompt == ["hi"]
    with pytest.raises(ValidationError, match="frozen"):
        exp.name = "changed"
    assert exp.name == "x"


@pytest.mark.parametrize(
    "text, expected",
    [
        (GOOD.replace("n_gen: 8", "n_gen: -1"), "workloads[0].n_gen: must be >= 0 (got -1)"),
        (GOOD.replace("prompt: hi", "prompt: hi, n_predict: 0"), "workloads[1].n_predict: must be > 0"),
        (GOOD.replace("name: g, prompt: hi", "name: g"), "workloads[1].prompt: field required"),
        (GOOD.replace("kind: bench", "kind: benchmark"), "workloads[0]"),
        (GOOD.replace("tiny_seed: 0", "tiny_seed: 0, colour: red"), "models[0].colour: unknown field"),
        (GOOD.replace("{name: tiny, tiny_seed: 0}", "{name: tiny}"), "models[0]: give exactly one of"),
        (GOOD.replace("name: g,", "name: b,"), "workload names must be unique: b"),
        (GOOD.replace("devices: [local]", "devices: []"), "devices:"),
    ],
)
def test_bad_experiment_names_file_and_field(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_experiment(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert expected in message
    assert "\n" not in message


def test_malformed_yaml_is_one_line_with_position(tmp_path):
    path = write(tmp_path, "name: x\ndevices: [local\nmodels: 3\n")
    with pytest.raises(ConfigError) as info:
        load_experiment(path)
    assert "invalid YAML" in str(info.value) and "line" in str(info.value)


def test_top_level_must_be_a_mapping(tmp_path):
    with pytest.raises(ConfigError, match="mapping"):
        load_experiment(write(tmp_path, "- a\n- b\n"))


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_experiment(tmp_path / "nope.yaml")


def test_unknown_device_suggests_close_names():
    with pytest.raises(UnknownNameError) as info:
        load_device("locall")
    assert "Did you mean: local" in str(info.value)


def test_every_shipped_device_config_and_experiment_validates():
    root = Path(__file__).resolve().parents[2]
    devices = sorted((root / "device_configs").glob("*.yaml"))
    experiments = sorted((root / "experiments").glob("*.yaml"))
    assert len(devices) >= 3 and len(experiments) >= 3, (devices, experiments)
    for p in devices:
        assert load_device(str(p)).name == p.stem
    for p in experiments:
        assert load_experiment(p).workloads


@pytest.mark.parametrize("kind", ["experiment", "device", "recipe"])
def test_json_schema_is_published(kind):
    schema = json.loads(json_schema(kind))
    assert schema["type"] == "object"
    assert "properties" in schema and schema["title"] == f"melt {kind}"

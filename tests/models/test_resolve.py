"""Model references in experiments: path, tiny_seed or a catalogue name."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from melt.config.specs import ModelRef
from melt.errors import ConfigError
from melt.runner.models import resolve_model


def test_exactly_one_source():
    assert ModelRef(name="g", catalog="gemma3-270m").catalog == "gemma3-270m"
    with pytest.raises(ValidationError, match="exactly one of"):
        ModelRef(name="g", catalog="gemma3-270m", tiny_seed=0)
    with pytest.raises(ValidationError, match="exactly one of"):
        ModelRef(name="g")


def test_unknown_catalogue_name_is_a_config_error_with_a_suggestion(tmp_path):
    with pytest.raises(ConfigError, match=r"models\[0\]\.catalog: Unknown model 'gemma3-270'. Did you mean: gemma3-270m"):
        resolve_model(ModelRef(name="g", catalog="gemma3-270"), base=tmp_path, source="x.yaml", index=0)


def test_catalogue_reference_resolves_to_the_cached_file(gemma_model: Path, tmp_path):
    resolved = resolve_model(ModelRef(name="gemma", catalog="gemma3-270m"), base=tmp_path, source="x.yaml", index=0)
    assert resolved.path == gemma_model.resolve()
    assert resolved.sha256 == "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
    prov = resolved.provenance()
    assert prov["n_params"] == 268_098_176 and prov["quantization"] == "Q4_K_M"
    assert prov["licence"] == "Gemma Terms of Use" and prov["catalog"] == "gemma3-270m"
    assert prov["architecture"] == "gemma3"


def test_melt_run_refuses_an_unknown_catalogue_name_before_any_run_folder(tmp_path):
    from click.testing import CliRunner

    from melt.cli.main import cli

    exp = tmp_path / "e.yaml"
    exp.write_text("name: e\ndevices: [local]\nframeworks: [{name: llama.cpp}]\n"
                   "models: [{name: g, catalog: gemma3-27m}]\n"
                   "workloads: [{name: b, kind: bench, n_prompt: [8], n_gen: [4]}]\n")
    result = CliRunner().invoke(cli, ["run", str(exp), "--results", str(tmp_path / "results")])
    assert result.exit_code == 1 and isinstance(result.exception, ConfigError), result.exception
    assert "models[0].catalog: Unknown model 'gemma3-27m'. Did you mean: gemma3-270m?" in str(result.exception)
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").iterdir())

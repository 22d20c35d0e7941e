"""melt model quantize: llama-quantize from the cached build, with provenance beside the variant."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from melt.cli.main import cli
from melt.config.specs import ModelRef
from melt.errors import UnknownNameError
from melt.frameworks.base import Build
from melt.frameworks.llamacpp.quantize import QuantizeError, quantize_model
from melt.models.gguf_facts import read_gguf_facts
from melt.models.tiny import write_tiny_model
from melt.runner.models import resolve_model


def test_unknown_type_and_missing_tool_are_clear(tmp_path):
    src = write_tiny_model(tmp_path / "t.gguf")
    empty = Build(dir=tmp_path, bin_dir=tmp_path, binaries={}, provenance={})
    with pytest.raises(UnknownNameError, match="Did you mean: Q8_0"):
        quantize_model(src, tmp_path / "o.gguf", "Q8_1", build=empty)
    with pytest.raises(QuantizeError, match="no llama-quantize"):
        quantize_model(src, tmp_path / "o.gguf", "q8_0", build=empty)
    (tmp_path / "junk.gguf").write_bytes(b"not a model")
    with pytest.raises(QuantizeError, match="not a GGUF"):
        quantize_model(tmp_path / "junk.gguf", tmp_path / "o.gguf", "Q8_0", build=empty)
    assert not (tmp_path / "o.gguf").exists()


@pytest.mark.slow
def test_first_quantization_of_an_f16_model(llamacpp_build, tmp_path):
    src = write_tiny_model(tmp_path / "t.gguf")
    out = tmp_path / "variants" / "t-q8_0.gguf"
    prov = quantize_model(src, out, "Q8_0", build=llamacpp_build)
    assert read_gguf_facts(out).file_type == "Q8_0"
    assert prov["requantized_from"] is None and prov["source"]["file_type"] == "F16"
    assert json.loads((tmp_path / "variants" / "t-q8_0.gguf.melt.json").read_text()) == prov
    assert "--allow-requantize" not in prov["command"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["t-q8_0.gguf", "t-q8_0.gguf.melt.json"]


@pytest.mark.slow
def test_gemma_q8_0_variant_records_requantized_from(llamacpp_build, gemma_model, tmp_path):
    out = tmp_path / "gemma-q8_0.gguf"
    result = CliRunner().invoke(cli, ["model", "quantize", "gemma3-270m", "--type", "q8_0", "-o", str(out),
                                      "--json"])
    assert result.exit_code == 0, result.output
    prov = json.loads(result.stdout)
    assert prov["requantized_from"] == "Q4_K_M" and "--allow-requantize" in prov["command"]
    assert prov["source"]["sha256"] == "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
    facts = read_gguf_facts(out)
    assert facts.file_type == "Q8_0" and facts.n_params == 268_098_176
    resolved = resolve_model(ModelRef(name="g8", path=str(out)), base=tmp_path, source="x.yaml", index=0)
    assert resolved.provenance()["requantized_from"] == "Q4_K_M"
    assert resolved.provenance()["quantization"] == "Q8_0"

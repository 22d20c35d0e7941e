"""GGUF facts from the header and tensor infos, checked against the gguf package's full reader."""

from __future__ import annotations

import struct

import gguf
import pytest

from melt.models.gguf_facts import GGUFError, gguf_facts, read_gguf_facts
from melt.models.tiny import N_VOCAB, write_tiny_model


def test_tiny_model_facts_match_the_full_reader(tmp_path):
    path = write_tiny_model(tmp_path / "t.gguf", seed=1)
    facts = read_gguf_facts(path)
    full = gguf.GGUFReader(str(path))
    assert facts.n_params == sum(int(t.n_elements) for t in full.tensors)
    assert facts.n_tensors == len(full.tensors)
    assert (facts.architecture, facts.file_type, facts.vocab_size) == ("llama", "F16", N_VOCAB)
    assert facts.name == "melt-tiny" and facts.n_layers == 2 and facts.embedding_length == 64
    assert facts.tensor_types == {"F16": 16, "F32": 5}
    assert facts.size_bytes == path.stat().st_size


def test_gemma_facts(gemma_model):
    facts = read_gguf_facts(gemma_model)
    assert facts.architecture == "gemma3" and facts.file_type == "Q4_K_M"
    assert facts.n_params == 268_098_176 and facts.vocab_size == 262_144
    assert facts.n_layers == 18 and facts.context_length == 32768
    assert set(facts.tensor_types) >= {"Q4_K", "Q6_K", "F32"}


def test_facts_are_remembered_until_the_file_changes(tmp_path, monkeypatch):
    monkeypatch.setenv("MELT_CACHE_DIR", str(tmp_path / "cache"))
    path = write_tiny_model(tmp_path / "t.gguf", seed=1)
    first = gguf_facts(path)
    assert (tmp_path / "cache" / "gguf-facts.json").is_file()
    assert gguf_facts(path) == first
    write_tiny_model(path, seed=2, name="other")
    assert gguf_facts(path).name == "other"


@pytest.mark.parametrize("cut", [3, 20, 200, 2000])
def test_truncated_or_foreign_files_are_refused(tmp_path, cut):
    data = write_tiny_model(tmp_path / "t.gguf").read_bytes()
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(data[:cut])
    with pytest.raises(GGUFError):
        read_gguf_facts(bad)
    assert gguf_facts(bad) is None


def test_unknown_version_is_refused(tmp_path):
    data = bytearray(write_tiny_model(tmp_path / "t.gguf").read_bytes())
    struct.pack_into("<I", data, 4, 99)
    (tmp_path / "v99.gguf").write_bytes(bytes(data))
    with pytest.raises(GGUFError, match="version 99"):
        read_gguf_facts(tmp_path / "v99.gguf")

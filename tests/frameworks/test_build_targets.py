"""Targets built on demand: a later binary is added to the same build, compiling only itself.

CMake is replaced by a script that records what it was asked to build, so
these tests check melt's bookkeeping (what is compiled, published, kept and
recorded), not the compiler; the real incremental build runs wherever a
serve job meets a build without llama-server (tests/android, the demo).
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from melt.errors import BuildError
from melt.frameworks.llamacpp.build import build_llamacpp
from melt.frameworks.llamacpp.recipe import load_recipe, recipe_dir

FAKE_CMAKE = r"""#!/bin/sh
# configure: cmake -S SRC -B DIR ...; build: cmake --build DIR -j N --target T...
if [ "$1" = "--version" ]; then echo "cmake version 3.99.0"; exit 0; fi
if [ "$1" = "--build" ]; then
  dir=$2; shift 2
  while [ $# -gt 0 ] && [ "$1" != "--target" ]; do shift; done; shift
  mkdir -p "$dir/bin"
  for t in "$@"; do
    printf '#!/bin/sh\necho %s\n' "$t" > "$dir/bin/$t"; chmod +x "$dir/bin/$t"
    echo "$t" >> "$FAKE_CMAKE_LOG"
  done
  echo "[1/1] Linking $*"
  exit 0
fi
while [ $# -gt 0 ]; do [ "$1" = "-B" ] && mkdir -p "$2"; shift; done
echo "-- Configuring done"
"""


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """(recipe without patches, source folder, compile log) with the fake cmake first on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    cmake = bin_dir / "cmake"
    cmake.write_text(FAKE_CMAKE)
    cmake.chmod(cmake.stat().st_mode | stat.S_IXUSR)
    log = tmp_path / "compiled.txt"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_CMAKE_LOG", str(log))
    text = (recipe_dir() / "recipe.yaml").read_text()
    start = text.index("patches:")
    end = text.index("\n\n", start)
    recipe_root = tmp_path / "recipe"
    recipe_root.mkdir()
    (recipe_root / "recipe.yaml").write_text(text[:start] + "patches: []" + text[end:])
    src = tmp_path / "src"
    src.mkdir()
    (src / "CMakeLists.txt").write_text("project(fake)\n")
    (src / "ggml").mkdir()
    return load_recipe(recipe_root / "recipe.yaml"), src, log


def compiled(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


def test_default_build_leaves_llama_server_for_when_it_is_needed(fake, tmp_path):
    recipe, src, log = fake
    assert recipe.on_demand == ("llama-server",)
    first = build_llamacpp("host", source=str(src), recipe=recipe, cache=tmp_path / "cache")
    assert sorted(first.binaries) == ["llama-bench", "llama-completion", "llama-perplexity", "llama-quantize"]
    assert sorted(compiled(log)) == ["llama-bench", "llama-completion", "llama-perplexity", "llama-quantize"]
    work = tmp_path / "cache" / "builds" / "llama.cpp" / ".work" / first.dir.name
    assert (work / "cmake").is_dir()  # kept: llama-server can still be added
    bench_inode = (first.dir / "bin" / "llama-bench").stat().st_ino

    again = build_llamacpp("host", source=str(src), recipe=recipe, cache=tmp_path / "cache",
                           targets=["llama-bench", "llama-completion"])
    assert again.cached and len(compiled(log)) == 4  # nothing more compiled

    added = build_llamacpp("host", source=str(src), recipe=recipe, cache=tmp_path / "cache",
                           targets=["llama-bench", "llama-server"])
    assert added.dir == first.dir and not added.cached
    assert compiled(log)[4:] == ["llama-server"]  # only the missing one
    assert sorted(added.binaries) == ["llama-bench", "llama-completion", "llama-perplexity", "llama-quantize",
                                      "llama-server"]
    assert (first.dir / "bin" / "llama-bench").stat().st_ino == bench_inode  # untouched for readers
    info = json.loads((first.dir / "build.json").read_text())
    assert info["targets"] == ["llama-bench", "llama-completion", "llama-server", "llama-perplexity",
                               "llama-quantize"]
    assert [a["targets"] for a in info["added"]] == [["llama-server"]]
    assert set(info["binaries"]) == set(added.binaries)
    assert not work.exists()  # every target published: the CMake folder has nothing left to add

    hit = build_llamacpp("host", source=str(src), recipe=recipe, cache=tmp_path / "cache",
                         targets=["llama-server"])
    assert hit.cached and len(compiled(log)) == 5


def test_a_target_the_profile_does_not_build_is_a_clear_error(fake, tmp_path):
    recipe, src, _ = fake
    with pytest.raises(BuildError, match="profile 'arm64' does not build llama-quantize"):
        build_llamacpp("arm64", source=str(src), recipe=recipe, cache=tmp_path / "cache",
                       targets=["llama-quantize"])


def test_every_profile_can_build_what_its_jobs_run():
    recipe = load_recipe()
    needed = {b for names in recipe.binaries.values() for b in names}
    for name in recipe.profiles:
        prof = recipe.profile(name)
        assert needed <= set(prof.targets), name
        assert "llama-server" not in recipe.default_targets(name)
    assert set(recipe.default_targets("host")) == {"llama-bench", "llama-completion", "llama-perplexity",
                                                        "llama-quantize"}

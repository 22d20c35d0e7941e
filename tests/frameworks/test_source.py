"""Source specs, local folders (hashed, copied, cached) and patch handling."""

from __future__ import annotations

from pathlib import Path

import pytest

from melt.errors import BuildError
from melt.frameworks.llamacpp.recipe import load_recipe
from melt.frameworks.llamacpp.source import obtain_source, parse_source

PATCH = """--- a/tools/x.cpp
+++ b/tools/x.cpp
@@ -1,2 +1,3 @@
 int main() {
+    flush();
 }
"""


def fake_tree(root: Path) -> Path:
    (root / "ggml").mkdir(parents=True)
    (root / "tools").mkdir()
    (root / "CMakeLists.txt").write_text(
        "set(LLAMA_VERSION_MAJOR 0)\nset(LLAMA_VERSION_MINOR 9)\nset(LLAMA_VERSION_PATCH 1)\n")
    (root / "tools" / "x.cpp").write_text("int main() {\n}\n")
    return root


def small_recipe(tmp_path: Path, patch: str | None = PATCH):
    folder = tmp_path / "recipe"
    (folder / "patches").mkdir(parents=True)
    patches = ""
    if patch is not None:
        (folder / "patches" / "0001-x.patch").write_text(patch)
        patches = "patches: [patches/0001-x.patch]\n"
    (folder / "recipe.yaml").write_text(
        "name: llama.cpp\nsource: {default: pypi, pypi: {package: llama-cpp-python, "
        "version: '0.3.36', subdir: vendor/llama.cpp}}\n" + patches +
        "binaries: {bench: [llama-bench]}\nprofiles: {host: {targets: [llama-bench]}}\n")
    return load_recipe(folder / "recipe.yaml")


def test_parse_source_forms(tmp_path):
    recipe = load_recipe()
    default = parse_source(None, recipe)
    assert (default.kind, default.package, default.version) == ("pypi", "llama-cpp-python", "0.3.36")
    git = parse_source("git+https://github.com/ggml-org/llama.cpp@b6000", recipe)
    assert (git.kind, git.url, git.ref) == ("git", "https://github.com/ggml-org/llama.cpp", "b6000")
    ssh = parse_source("git+ssh://git@example.org/llama.cpp", recipe)
    assert (ssh.url, ssh.ref) == ("ssh://git@example.org/llama.cpp", "master")
    assert parse_source("pypi:0.3.35", recipe).version == "0.3.35"
    assert parse_source(str(tmp_path), recipe).kind == "path"
    with pytest.raises(BuildError, match="not found"):
        parse_source(str(tmp_path / "nope"), recipe)


def test_folder_source_is_copied_patched_and_cached(tmp_path):
    recipe = small_recipe(tmp_path)
    src = fake_tree(tmp_path / "llama.cpp")
    cache = tmp_path / "cache"
    tree = obtain_source(parse_source(str(src), recipe), recipe, cache=cache)
    assert tree.kind == "path" and tree.version == "0.9.1" and len(tree.sha256) == 64
    assert "flush();" in (tree.path / "tools" / "x.cpp").read_text()
    assert "flush();" not in (src / "tools" / "x.cpp").read_text()  # the user's tree is untouched
    assert tree.patches[0]["status"] == "applied"
    again = obtain_source(parse_source(str(src), recipe), recipe, cache=cache)
    assert again == tree
    (src / "tools" / "x.cpp").write_text("int main() {\n}\n// changed\n")
    changed = obtain_source(parse_source(str(src), recipe), recipe, cache=cache)
    assert changed.sha256 != tree.sha256 and changed.path != tree.path
    assert not list((cache / "sources" / "llama.cpp").glob(".tmp-*"))


def test_patch_already_upstream_is_skipped(tmp_path):
    recipe = small_recipe(tmp_path)
    src = fake_tree(tmp_path / "llama.cpp")
    (src / "tools" / "x.cpp").write_text("int main() {\n    flush();\n}\n")
    tree = obtain_source(parse_source(str(src), recipe), recipe, cache=tmp_path / "cache")
    assert tree.patches[0]["status"] == "already present"


def test_patch_that_does_not_apply_is_a_build_error(tmp_path):
    recipe = small_recipe(tmp_path)
    src = fake_tree(tmp_path / "llama.cpp")
    (src / "tools" / "x.cpp").write_text("void other() {}\n")
    with pytest.raises(BuildError, match="patch 0001-x.patch does not apply"):
        obtain_source(parse_source(str(src), recipe), recipe, cache=tmp_path / "cache")
    assert not list((tmp_path / "cache" / "sources" / "llama.cpp").glob("path-*"))


def test_not_a_llama_cpp_folder(tmp_path):
    recipe = small_recipe(tmp_path, patch=None)
    with pytest.raises(BuildError, match="does not look like a llama.cpp tree"):
        obtain_source(parse_source(str(tmp_path), recipe), recipe, cache=tmp_path / "cache")


def test_git_source_resolves_the_ref_and_caches_by_commit(tmp_path):
    import subprocess

    recipe = small_recipe(tmp_path)
    repo = fake_tree(tmp_path / "repo")
    git = ["git", "-C", str(repo), "-c", "user.email=t@example.org", "-c", "user.name=t"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "one"], check=True)
    commit = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True,
                            text=True).stdout.strip()
    ref = parse_source(f"git+file://{repo}@main", recipe)
    tree = obtain_source(ref, recipe, cache=tmp_path / "cache")
    assert tree.kind == "git" and tree.commit == commit
    assert tree.path.name.startswith(f"git-{commit[:12]}-")
    assert "flush();" in (tree.path / "tools" / "x.cpp").read_text()
    assert not (tree.path / ".git").exists()
    by_commit = obtain_source(parse_source(f"git+file://{repo}@{commit}", recipe), recipe,
                              cache=tmp_path / "cache")
    assert by_commit == tree
    with pytest.raises(BuildError, match="not found"):
        obtain_source(parse_source(f"git+file://{repo}@nope", recipe), recipe, cache=tmp_path / "c2")

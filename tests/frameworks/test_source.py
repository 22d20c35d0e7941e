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


def small_recipe(tmp_path: Path, patch: str | None = PATCH, sha256: str | None = None):
    folder = tmp_path / "recipe"
    (folder / "patches").mkdir(parents=True, exist_ok=True)
    patches = ""
    if patch is not None:
        (folder / "patches" / "0001-x.patch").write_text(patch)
        patches = "patches: [patches/0001-x.patch]\n"
    pin = f", sha256: {sha256}" if sha256 else ""
    (folder / "recipe.yaml").write_text(
        "name: llama.cpp\nsource: {default: pypi, pypi: {package: llama-cpp-python, "
        f"version: '0.3.36'{pin}, subdir: vendor/llama.cpp}}}}\n" + patches +
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


# -- the pinned sdist, from a package index on loopback -----------------------

import hashlib  # noqa: E402
import http.server  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import tarfile  # noqa: E402
import threading  # noqa: E402

from melt.frameworks.package_index import (  # noqa: E402
    IndexSettings,
    fetch_sdist,
    mask_url,
    pip_settings,
)

SDIST = "llama_cpp_python-0.3.36.tar.gz"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


class Index:
    """A real HTTP server on loopback: ``routes`` maps a path to (content type, body)."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[str, bytes]] = {}
        self.requests: list[dict] = []
        self.send_length = True
        index = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                index.requests.append({"path": self.path, "auth": self.headers.get("Authorization"),
                                       "accept": self.headers.get("Accept")})
                if self.path not in index.routes:
                    self.send_error(404)
                    return
                ctype, body = index.routes[self.path]
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                if index.send_length:
                    self.send_header("Content-Length", str(len(body)))
                else:
                    self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def files_asked(self) -> list[str]:
        return [r["path"] for r in self.requests if r["path"].startswith("/files/")]


@pytest.fixture
def index(monkeypatch):
    """Two servers (the index, and a file host on another port); pip reads only PIP_INDEX_URL."""
    main, files = Index(), Index()
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)  # pip then reads no pip.conf at all
    monkeypatch.setenv("PIP_INDEX_URL", main.url.replace("://", "://melt:s3cret@") + "/simple")
    for name in ("PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_NO_INDEX"):
        monkeypatch.delenv(name, raising=False)
    yield main, files
    main.server.shutdown()
    files.server.shutdown()


def make_sdist(marker: Path, *, tampered: bool = False, extra: dict[str, bytes] | None = None) -> bytes:
    """A small sdist whose setup.py and in-tree build backend would create ``marker`` if run."""
    top = "llama_cpp_python-0.3.36"
    run_me = f"open({str(marker)!r}, 'w').write('ran')\n".encode()
    files = {
        "setup.py": run_me,
        "melt_backend.py": run_me,
        "pyproject.toml": b'[build-system]\nrequires = []\nbuild-backend = "melt_backend"\nbackend-path = ["."]\n',
        "PKG-INFO": b"Metadata-Version: 2.1\nName: llama_cpp_python\nVersion: 0.3.36\n",
        ".git/modules/vendor/llama.cpp/HEAD": COMMIT.encode() + b"\n",
        "vendor/llama.cpp/CMakeLists.txt":
            b"set(LLAMA_VERSION_MAJOR 0)\nset(LLAMA_VERSION_MINOR 9)\nset(LLAMA_VERSION_PATCH 1)\n",
        "vendor/llama.cpp/ggml/CMakeLists.txt": b"# ggml\n",
        "vendor/llama.cpp/tools/x.cpp": b"int main() {\n}\n" + (b"// backdoor\n" if tampered else b""),
        **(extra or {}),
    }
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size, info.mtime = len(data), 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def json_page(url: str, data: bytes | None = None, size: int | None = None) -> tuple[str, bytes]:
    entry = {"filename": SDIST, "url": url, "hashes": {"sha256": sha(data)} if data else {}}
    if size is not None:
        entry["size"] = size
    doc = {"meta": {"api-version": "1.1"}, "name": "llama-cpp-python", "files": [entry]}
    return "application/vnd.pypi.simple.v1+json", json.dumps(doc).encode()


@pytest.fixture
def commands(monkeypatch):
    """Every argv melt starts in this test (through subprocess.Popen, which run() uses)."""
    seen: list[list[str]] = []
    real = subprocess.Popen

    def record(argv, *args, **kwargs):
        seen.append([str(a) for a in argv])
        return real(argv, *args, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", record)
    return seen


def test_pinned_sdist_comes_from_the_index_verified_then_unpacked(tmp_path, index, commands):
    main, files = index
    good = make_sdist(tmp_path / "ran")
    files.routes[f"/files/{SDIST}"] = ("application/octet-stream", good)
    main.routes["/simple/llama-cpp-python/"] = json_page(f"{files.url}/files/{SDIST}", good, len(good))
    recipe = small_recipe(tmp_path, sha256=sha(good))
    lines: list[str] = []
    tree = obtain_source(parse_source(None, recipe), recipe, cache=tmp_path / "cache", on_output=lines.append)

    assert (tree.kind, tree.sha256, tree.commit, tree.version) == ("pypi", sha(good), COMMIT, "0.9.1")
    assert "flush();" in (tree.path / "tools" / "x.cpp").read_text()
    assert (tmp_path / "cache" / "downloads" / "pypi" / SDIST).read_bytes() == good
    assert not (tmp_path / "ran").exists()  # neither setup.py nor the build backend ever ran
    assert not any("download" in argv for argv in commands)  # no `pip download`
    page = main.requests[0]
    assert page["accept"].startswith("application/vnd.pypi.simple.v1+json")
    assert page["auth"] == "Basic bWVsdDpzM2NyZXQ="  # melt:s3cret, to the index's own host
    assert files.requests[0]["auth"] is None  # never to another host
    assert any("melt:***@127.0.0.1" in ln for ln in lines) and not any("s3cret" in ln for ln in lines)

    again = obtain_source(parse_source(None, recipe), recipe, cache=tmp_path / "cache")
    assert again == tree and len(files.files_asked()) == 1  # the cached file, hashed again


@pytest.mark.parametrize("listed", ["no hash on the page", "the page's own hash"])
def test_tampered_sdist_is_refused_before_anything_in_it_runs(tmp_path, index, commands, listed):
    main, _files = index
    good, bad = make_sdist(tmp_path / "ran"), make_sdist(tmp_path / "ran", tampered=True)
    main.routes[f"/files/{SDIST}"] = ("application/octet-stream", bad)
    fragment = f"#sha256={sha(bad)}" if listed == "the page's own hash" else ""
    main.routes["/simple/llama-cpp-python/"] = (
        "text/html", f'<html><body><a href="../../files/{SDIST}{fragment}">{SDIST}</a></body></html>'.encode())
    recipe = small_recipe(tmp_path, sha256=sha(good))
    cache = tmp_path / "cache"

    with pytest.raises(BuildError) as caught:
        obtain_source(parse_source(None, recipe), recipe, cache=cache)
    message = str(caught.value)
    assert f"not the pinned {sha(good)[:16]}" in message
    assert "melt:***@127.0.0.1" in message and "s3cret" not in message
    assert not (tmp_path / "ran").exists()
    assert not any("download" in argv for argv in commands)
    assert [p.name for p in (cache / "downloads" / "pypi").iterdir() if not p.name.endswith(".lock")] == []
    assert not (cache / "sources").exists() or not [
        p for p in (cache / "sources" / "llama.cpp").iterdir() if not p.name.endswith(".lock")]
    # a page that names another hash is not even downloaded from
    assert main.files_asked() == ([] if fragment else [f"/files/{SDIST}"])


def test_a_cached_sdist_from_before_is_verified_again(tmp_path, index):
    main, _files = index
    good = make_sdist(tmp_path / "ran")
    main.routes[f"/files/{SDIST}"] = ("application/octet-stream", good)
    main.routes["/simple/llama-cpp-python/"] = json_page(f"{main.url}/files/{SDIST}", good)
    downloads = tmp_path / "cache" / "downloads" / "pypi"
    downloads.mkdir(parents=True)
    # what the old `pip download` left: the file and a sidecar vouching for it
    (downloads / SDIST).write_bytes(make_sdist(tmp_path / "ran", tampered=True))
    (downloads / f"{SDIST}.sha256").write_text(sha(good) + "\n")
    recipe = small_recipe(tmp_path, sha256=sha(good))
    tree = obtain_source(parse_source(None, recipe), recipe, cache=tmp_path / "cache")
    assert tree.sha256 == sha(good) and (downloads / SDIST).read_bytes() == good
    assert "backdoor" not in (tree.path / "tools" / "x.cpp").read_text()
    assert main.files_asked() == [f"/files/{SDIST}"]


@pytest.mark.parametrize("how", ["Content-Length", "no length, the stream", "size on the page"])
def test_an_oversized_sdist_is_refused(tmp_path, index, how):
    main, _files = index
    big = make_sdist(tmp_path / "ran", extra={"pad": os.urandom(20_000)})
    main.send_length = how == "Content-Length"
    main.routes[f"/files/{SDIST}"] = ("application/octet-stream", big)
    main.routes["/simple/llama-cpp-python/"] = json_page(
        f"{main.url}/files/{SDIST}", big, len(big) if how == "size on the page" else None)
    dest = tmp_path / "dl"
    dest.mkdir()
    with pytest.raises(BuildError, match="limit"):
        fetch_sdist("llama-cpp-python", "0.3.36", sha(big), dest / SDIST, max_bytes=10_000)
    assert list(dest.iterdir()) == []
    assert main.files_asked() == ([] if how == "size on the page" else [f"/files/{SDIST}"])


def test_a_correct_sdist_is_still_unpacked_with_the_data_filter(tmp_path, index):
    main, _files = index
    evil = make_sdist(tmp_path / "ran", extra={"vendor/llama.cpp/../../../../escaped": b"x"})
    main.routes[f"/files/{SDIST}"] = ("application/octet-stream", evil)
    main.routes["/simple/llama-cpp-python/"] = json_page(f"{main.url}/files/{SDIST}", evil)
    recipe = small_recipe(tmp_path, sha256=sha(evil))
    with pytest.raises(BuildError, match="cannot unpack"):
        obtain_source(parse_source(None, recipe), recipe, cache=tmp_path / "cache")
    assert not list(tmp_path.rglob("escaped"))


def test_pypi_sources_need_a_pin(tmp_path):
    recipe = small_recipe(tmp_path, sha256="a" * 64)
    assert parse_source("pypi:0.3.36", recipe).sha256 == "a" * 64
    assert parse_source(f"pypi:0.3.35#sha256={'B' * 64}", recipe).sha256 == "b" * 64
    with pytest.raises(BuildError, match="no pinned sha256"):
        obtain_source(parse_source("pypi:0.3.35", recipe), recipe, cache=tmp_path / "cache")
    for text in ("pypi:0.3.35#md5=abc", "pypi:../../0.3.35", "pypi:x==1/2"):
        with pytest.raises(BuildError):
            parse_source(text, recipe)


def test_index_settings_are_read_as_pip_reads_them(tmp_path, monkeypatch):
    conf = tmp_path / "pip.conf"
    conf.write_text("[global]\nindex-url = http://global.example/simple\n"
                    "extra-index-url = http://b.example/simple\n    file:///srv/simple\n"
                    "find-links = /srv/wheels\ntimeout = 7\n"
                    "[download]\nindex-url = http://download.example/simple\n")
    monkeypatch.setenv("PIP_CONFIG_FILE", str(conf))
    for name in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_NO_INDEX",
                 "PIP_DEFAULT_TIMEOUT", "PIP_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    got = pip_settings()
    assert got.index_urls == ("http://download.example/simple", "http://b.example/simple", "file:///srv/simple")
    assert (got.find_links, got.timeout_s) == (("/srv/wheels",), 7.0)
    monkeypatch.setenv("PIP_INDEX_URL", "https://env.example/simple")
    monkeypatch.setenv("PIP_FIND_LINKS", "/a /b")
    got = pip_settings()
    assert got.index_urls[0] == "https://env.example/simple" and got.find_links == ("/a", "/b")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    assert pip_settings().index_urls == ()


def test_find_links_folder_and_file_index(tmp_path, monkeypatch):
    good = make_sdist(tmp_path / "ran")
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / SDIST).write_bytes(good)
    settings = IndexSettings(index_urls=(), find_links=(str(wheels),))
    out = tmp_path / SDIST
    assert fetch_sdist("llama-cpp-python", "0.3.36", sha(good), out, settings=settings).read_bytes() == good
    with pytest.raises(BuildError, match="not the pinned"):
        fetch_sdist("llama-cpp-python", "0.3.36", "0" * 64, tmp_path / "other.tar.gz", settings=settings)


def test_urls_are_masked():
    assert mask_url("https://me:pw@idx.example:8443/simple") == "https://me:***@idx.example:8443/simple"
    assert mask_url("https://token@idx.example/simple") == "https://***@idx.example/simple"
    assert mask_url("https://idx.example/simple") == "https://idx.example/simple"

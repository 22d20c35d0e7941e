"""Obtain, unpack, patch and identify a llama.cpp source tree (cached).

Three kinds of source:

- ``pypi`` (default): the llama-cpp-python sdist pinned (version and
  sha256) in the recipe, fetched from pip's configured indexes by
  :mod:`melt.frameworks.package_index` and used only once its sha256
  matches; the llama.cpp tree is its ``vendor/llama.cpp`` folder.
- ``git``: ``git+URL@REF``, fetched shallowly at the commit REF resolves to.
- ``path``: a folder holding a llama.cpp tree (copied, never modified), or a
  local sdist ``.tar.gz``.

Each source is unpacked once into ``<cache>/sources/llama.cpp/<id>/`` with
the recipe's patches applied; the folder appears by an atomic rename, so a
half-unpacked tree is never reused.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from melt.errors import BuildError
from melt.frameworks.cache import cache_root, file_lock, publish_dir
from melt.frameworks.llamacpp.recipe import Recipe
from melt.frameworks.package_index import fetch_sdist
from melt.hashing import file_sha256

SOURCE_INFO = ".melt-source.json"
_IGNORED_DIRS = {".git", "build", "node_modules", "__pycache__", ".cache"}
_HEX40 = re.compile(r"^[0-9a-f]{40}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_PACKAGE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$")
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+!_-]*$")


@dataclass(frozen=True)
class SourceRef:
    """What the user asked for, before anything is fetched."""

    kind: str  # "pypi" | "git" | "path"
    package: str = ""
    version: str = ""
    subdir: str = ""
    url: str = ""
    ref: str = ""
    path: Path | None = None
    sha256: str = ""  # the pinned sdist's, for a pypi source

    def describe(self) -> str:
        if self.kind == "pypi":
            return f"pypi:{self.package}=={self.version}"
        if self.kind == "git":
            return f"git+{self.url}@{self.ref}"
        return str(self.path)


@dataclass(frozen=True)
class SourceTree:
    """An unpacked, patched llama.cpp tree and where it came from."""

    path: Path
    kind: str
    spec: str
    sha256: str  # of the sdist archive; of the file contents for git and path sources
    commit: str | None = None
    version: str | None = None
    patches: tuple[dict, ...] = field(default_factory=tuple)

    @property
    def identity(self) -> dict:
        """What defines this tree's contents (goes into the build cache key)."""
        return {
            "kind": self.kind,
            "sha256": self.sha256,
            "commit": self.commit,
            "patches": [p["sha256"] for p in self.patches],
        }

    def provenance(self) -> dict:
        return {
            "kind": self.kind,
            "spec": self.spec,
            "sha256": self.sha256,
            "llama_cpp_commit": self.commit,
            "llama_cpp_version": self.version,
            "patches": list(self.patches),
        }


def parse_source(text: str | None, recipe: Recipe) -> SourceRef:
    """Turn ``--source`` text into a :class:`SourceRef` (``None``: the recipe default).

    Accepts ``git+URL@REF`` (``@REF`` optional), ``pypi:VERSION`` or
    ``pypi:PACKAGE==VERSION``, or a local folder / sdist archive path.
    Raises :class:`BuildError` for a path that does not exist.
    """
    spec = recipe.source
    if text is None or text == "pypi" or (text == "git" and spec.git):
        kind = "git" if text == "git" else spec.default
        if kind == "git":
            assert spec.git is not None
            check_git_url(spec.git.url, spec.git.ref)
            return SourceRef("git", url=spec.git.url, ref=spec.git.ref)
        assert spec.pypi is not None
        return SourceRef("pypi", package=spec.pypi.package, version=spec.pypi.version,
                         subdir=spec.pypi.subdir, sha256=spec.pypi.sha256 or "")
    if text.startswith("git+"):
        rest = text[4:]
        url, sep, ref = rest.rpartition("@")
        # "git+ssh://git@host/x" has an @ inside the URL: only a tail after the
        # last "/" counts as a ref.
        if not sep or "/" in ref or not url:
            url, ref = rest, (spec.git.ref if spec.git else "master")
        check_git_url(url, ref)
        return SourceRef("git", url=url, ref=ref)
    if text.startswith("pypi:"):
        return _parse_pypi(text, recipe)
    path = Path(text).expanduser()
    if not path.exists():
        raise BuildError(
            f"source {text!r} not found: give a llama.cpp folder, an sdist .tar.gz, "
            "git+URL@REF or pypi:VERSION"
        )
    subdir = spec.pypi.subdir if spec.pypi else ""
    return SourceRef("path", path=path.resolve(), subdir=subdir)


def _parse_pypi(text: str, recipe: Recipe) -> SourceRef:
    """``pypi:[PACKAGE==]VERSION[#sha256=HEX]``; the recipe's pin when it names the same sdist."""
    body, _, fragment = text[5:].partition("#")
    default = recipe.source.pypi
    package, _, version = body.rpartition("==")
    package = package or (default.package if default else "llama-cpp-python")
    if not _PACKAGE.match(package) or not _VERSION.match(version):
        raise BuildError(f"source {text!r} is not pypi:VERSION or pypi:PACKAGE==VERSION")
    sha = ""
    if fragment:
        algo, _, sha = fragment.partition("=")
        if algo != "sha256" or not _SHA256.match(sha.lower()):
            raise BuildError(f"source {text!r}: the pin after '#' must be sha256=<64 hex digits>")
        sha = sha.lower()
    same = default is not None and default.package == package
    if not sha and same and default is not None and default.version == version:
        sha = default.sha256 or ""
    subdir = default.subdir if same and default is not None else "vendor/llama.cpp"
    return SourceRef("pypi", package=package, version=version, subdir=subdir, sha256=sha)


def obtain_source(
    ref: SourceRef, recipe: Recipe, *, cache: Path | None = None, on_output=None
) -> SourceTree:
    """Fetch (if needed), unpack and patch ``ref``; return the cached tree.

    ``on_output`` receives progress lines. Raises :class:`BuildError` when the
    download, unpacking or a patch fails.
    """
    cache = cache or cache_root()
    say = on_output or (lambda line: None)
    patches = _patch_infos(recipe)
    phash = hashlib.sha256("".join(p["sha256"] for p in patches).encode()).hexdigest()[:8]
    sources = cache / "sources" / "llama.cpp"

    if ref.kind == "pypi":
        archive = _verified_sdist(ref, cache / "downloads" / "pypi", say)
        return _from_archive(archive, ref.subdir, ref.describe(), "pypi", sources, patches, phash, say,
                             sha=ref.sha256)
    if ref.kind == "git":
        return _from_git(ref, sources, patches, phash, say)
    assert ref.path is not None
    if ref.path.is_file():
        return _from_archive(ref.path, ref.subdir, str(ref.path), "path", sources, patches, phash, say)
    return _from_folder(ref.path, sources, patches, phash, say)


# -- pypi / archives ---------------------------------------------------------


def _verified_sdist(ref: SourceRef, dest: Path, say) -> Path:
    """The cached sdist of ``ref``, fetched if absent; its sha256 is checked against the pin every time.

    A cached file that does not match (an older download, a damaged or
    replaced file) is deleted and fetched again. Nothing in the archive is
    unpacked or run before its hash matches.
    """
    if not ref.sha256:
        raise BuildError(
            f"{ref.describe()} has no pinned sha256: give pypi:{ref.package}=={ref.version}#sha256=HEX "
            "(the sdist file's sha256, from a source you trust) or pin it in recipe.yaml")
    dest.mkdir(parents=True, exist_ok=True)
    stem = f"{re.sub(r'[-_.]+', '_', ref.package).lower()}-{ref.version}"
    final = dest / f"{stem}.tar.gz"
    with file_lock(dest / f".{stem}.lock"):
        if final.is_file():
            if file_sha256(final) == ref.sha256:
                return final
            say(f"cached {final.name} does not match the pinned sha256: fetching it again")
            final.unlink()
        return fetch_sdist(ref.package, ref.version, ref.sha256, final, say=say)


def _from_archive(archive, subdir, spec, kind, sources, patches, phash, say, *, sha: str = "") -> SourceTree:
    sha = sha or file_sha256(archive)
    sid = f"{kind}-{archive.name.split('.tar')[0]}-{sha[:12]}-p{phash}"

    def fill(tmp: Path) -> dict:
        commit = _extract_subdir(archive, subdir, tmp)
        _prepare_tree(tmp, patches, say)
        return _info(kind, spec, sha, commit, _cmake_version(tmp), patches)

    return _materialise(sources, sid, f"unpacking {archive.name}", fill, say)


def _materialise(sources: Path, sid: str, message: str, fill, say) -> SourceTree:
    """The tree ``sources/sid``, made once by ``fill(tmp) -> info`` and published atomically."""
    final = sources / sid
    with file_lock(sources / f".{sid}.lock"):
        if not (final / SOURCE_INFO).is_file():
            say(message)
            tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=sources))
            try:
                info = fill(tmp)
                (tmp / SOURCE_INFO).write_text(json.dumps(info, indent=2))
                tmp.chmod(0o755)  # mkdtemp made it private
                publish_dir(tmp, final)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    return _load_tree(final)


def _extract_subdir(archive: Path, subdir: str, out: Path) -> str | None:
    """Extract ``<top>/<subdir>/`` of an sdist into ``out``; return the vendored commit if recorded."""
    commit = None
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            if not members:
                raise BuildError(f"{archive} is empty")
            top = members[0].name.split("/")[0]
            prefix = f"{top}/{subdir.strip('/')}/" if subdir else f"{top}/"
            head_name = f"{top}/.git/modules/{subdir.strip('/')}/HEAD"
            picked = []
            for m in members:
                if m.name == head_name and m.isfile():
                    fh = tar.extractfile(m)
                    text = fh.read().decode(errors="replace").strip() if fh else ""
                    commit = text if _HEX40.match(text) else None
                elif m.name.startswith(prefix):
                    m.name = m.name[len(prefix):]
                    if m.name:
                        picked.append(m)
            if not picked:
                raise BuildError(f"{archive} has no {subdir or 'files'} folder")
            kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(out, members=picked, **kwargs)
    except (tarfile.TarError, OSError) as exc:
        raise BuildError(f"cannot unpack {archive}: {exc}") from None
    return commit


# -- git ---------------------------------------------------------------------


def _git(*args: str, cwd: Path | None = None) -> str:
    if shutil.which("git") is None:
        raise BuildError("git is needed for a git+URL source: apt-get install git")
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or [""]
        raise BuildError(f"git {' '.join(args[:2])} failed: {tail[0][:300]}")
    return proc.stdout.strip()


_GIT_URL = re.compile(r"^(?:[a-z][a-z0-9+.-]*://[^\s]+|[\w.-]+@[\w.-]+:[^\s]+|/[^\s]*)$", re.I)
_GIT_REF = re.compile(r"^[\w][\w./-]*$")


def check_git_url(url: str, ref: str) -> None:
    """Raise :class:`BuildError` unless ``url`` is a git URL and ``ref`` a plain ref name.

    Neither may start with ``-``: git would read it as an option
    (``--upload-pack=CMD`` runs CMD).
    """
    if url.startswith("-") or not _GIT_URL.match(url):
        raise BuildError(f"git source URL {url!r} is not a URL: use git+https://HOST/REPO@REF, "
                         "git+ssh://..., git+USER@HOST:PATH or git+/absolute/path")
    if not _GIT_REF.match(ref) or ".." in ref:
        raise BuildError(f"git ref {ref!r} is not a branch, tag or commit name")


def _from_git(ref: SourceRef, sources, patches, phash, say) -> SourceTree:
    commit = ref.ref if _HEX40.match(ref.ref) else None
    if commit is None:
        out = _git("ls-remote", "--", ref.url, ref.ref, f"refs/tags/{ref.ref}^{{}}")
        lines = [ln.split() for ln in out.splitlines() if ln.strip()]
        if not lines:
            raise BuildError(f"git ref {ref.ref!r} not found in {ref.url}")
        peeled = [ln[0] for ln in lines if ln[1].endswith("^{}")]
        commit = (peeled or [lines[0][0]])[0]
    sid = f"git-{commit[:12]}-p{phash}"

    def fill(tmp: Path) -> dict:
        _git("init", "-q", str(tmp))
        _git("fetch", "-q", "--depth", "1", "--", ref.url, commit, cwd=tmp)
        _git("checkout", "-q", "FETCH_HEAD", cwd=tmp)
        shutil.rmtree(tmp / ".git")
        _prepare_tree(tmp, patches, say)
        return _info("git", ref.describe(), _tree_sha256(tmp, skip_info=True), commit,
                     _cmake_version(tmp), patches)

    return _materialise(sources, sid, f"fetching {ref.url} at {commit[:12]}", fill, say)


# -- local folders -----------------------------------------------------------


def _from_folder(folder: Path, sources, patches, phash, say) -> SourceTree:
    if not (folder / "CMakeLists.txt").is_file() or not (folder / "ggml").is_dir():
        raise BuildError(f"{folder} does not look like a llama.cpp tree (no CMakeLists.txt / ggml/)")
    say(f"hashing {folder}")
    sha = _tree_sha256(folder)
    commit = None
    if (folder / ".git").exists() and shutil.which("git"):
        proc = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"],
                              capture_output=True, text=True)
        commit = proc.stdout.strip() if proc.returncode == 0 else None
    sid = f"path-{sha[:12]}-p{phash}"

    def fill(tmp: Path) -> dict:
        shutil.copytree(folder, tmp, dirs_exist_ok=True, ignore=_ignore_build_dirs)
        _prepare_tree(tmp, patches, say)
        return _info("path", str(folder), sha, commit, _cmake_version(tmp), patches)

    return _materialise(sources, sid, f"copying {folder}", fill, say)


# -- shared ------------------------------------------------------------------


def _patch_infos(recipe: Recipe) -> list[dict]:
    return [{"name": p.name, "sha256": file_sha256(p), "path": str(p)} for p in recipe.patch_paths()]


def _prepare_tree(tree: Path, patches: list[dict], say) -> None:
    """Drop a dangling git pointer and apply the patches (``patch -p1``)."""
    git_pointer = tree / ".git"
    if git_pointer.is_file():
        git_pointer.unlink()
    for info in patches:
        patch = Path(info["path"])
        applied = _run_patch(tree, patch, dry_run=True)
        if applied.returncode != 0:
            if _run_patch(tree, patch, dry_run=True, reverse=True).returncode == 0:
                info["status"] = "already present"
                say(f"patch {patch.name}: already present upstream, skipped")
                continue
            tail = (applied.stdout + applied.stderr).strip().splitlines()[-1:] or [""]
            raise BuildError(f"patch {patch.name} does not apply to this llama.cpp tree: {tail[0]}")
        _run_patch(tree, patch)
        info["status"] = "applied"
        say(f"patch {patch.name}: applied")


def _run_patch(tree: Path, patch: Path, *, dry_run=False, reverse=False):
    if shutil.which("patch"):
        argv = ["patch", "-p1", "--batch", "--fuzz=0", "--forward", "-i", str(patch)]
        if reverse:
            argv = ["patch", "-p1", "--batch", "--fuzz=0", "-R", "-i", str(patch)]
        if dry_run:
            argv.append("--dry-run")
    elif shutil.which("git"):
        argv = ["git", "apply", "-p1", *(["-R"] if reverse else []),
                *(["--check"] if dry_run else []), str(patch)]
    else:
        raise BuildError("applying patches needs `patch` or `git`: apt-get install patch")
    return subprocess.run(argv, cwd=tree, capture_output=True, text=True)


def _info(kind, spec, sha, commit, version, patches) -> dict:
    return {
        "kind": kind,
        "spec": spec,
        "sha256": sha,
        "commit": commit,
        "version": version,
        "patches": [{k: p[k] for k in ("name", "sha256", "status") if k in p} for p in patches],
    }


def _load_tree(folder: Path) -> SourceTree:
    info = json.loads((folder / SOURCE_INFO).read_text())
    return SourceTree(
        path=folder,
        kind=info["kind"],
        spec=info["spec"],
        sha256=info["sha256"],
        commit=info.get("commit"),
        version=info.get("version"),
        patches=tuple(info.get("patches", [])),
    )


def _cmake_version(tree: Path) -> str | None:
    """``MAJOR.MINOR.PATCH`` from llama.cpp's top CMakeLists.txt, when it declares one."""
    try:
        text = (tree / "CMakeLists.txt").read_text(errors="replace")
    except OSError:
        return None
    parts = [re.search(rf"set\(LLAMA_VERSION_{p}\s+(\d+)\)", text) for p in ("MAJOR", "MINOR", "PATCH")]
    if not all(parts):
        return None
    return ".".join(m.group(1) for m in parts if m)


def _skip_dir(name: str) -> bool:
    return name in _IGNORED_DIRS or name.startswith("build")


def _ignore_build_dirs(folder: str, names: list[str]) -> list[str]:
    return [n for n in names if _skip_dir(n) and os.path.isdir(os.path.join(folder, n))]



def _tree_sha256(folder: Path, *, skip_info: bool = False) -> str:
    """A hash of every file's relative path, mode bit and contents (build folders skipped)."""
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not _skip_dir(d))
        for name in sorted(files):
            path = Path(root) / name
            rel = path.relative_to(folder).as_posix()
            if skip_info and rel == SOURCE_INFO:
                continue
            if path.is_symlink():
                digest.update(f"L {rel} {os.readlink(path)}\n".encode())
                continue
            executable = os.access(path, os.X_OK)
            digest.update(f"F {rel} {int(executable)} {file_sha256(path)}\n".encode())
    return digest.hexdigest()

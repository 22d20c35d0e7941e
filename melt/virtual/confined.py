"""Files beneath a folder that programs on a virtual device can change.

A program on the virtual phone may turn any folder it can write into a
symlink (to ``/etc``, to ``/proc/1/root``, to a file of this host), and may
do it while the host is looking. So the host never opens such a path by
name: it walks from the trusted folder one component at a time, each opened
relative to the previous one with ``O_NOFOLLOW``, and refuses ``..``, empty
and absolute components. A symlink anywhere on the way is refused
(``ELOOP``/``ENOTDIR``); a symlink as the last component is served as a
symlink (lstat, list, replace) and never followed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat as st
from pathlib import Path, PurePosixPath
from typing import Iterator

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def parts_of(rel: str | PurePosixPath) -> list[str]:
    """The components of a relative path; raises ``OSError(EPERM)`` on ``..`` or an absolute path."""
    text = str(rel)
    if text.startswith("/"):
        raise OSError(errno.EPERM, f"absolute path {text!r} where a relative one was expected")
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise OSError(errno.EPERM, f"'..' in {text!r}")
    return parts


@contextlib.contextmanager
def open_dir(root: Path, rel: str | PurePosixPath, *, create: bool = False) -> Iterator[int]:
    """A directory fd for ``root/rel`` reached without following any symlink below ``root``.

    ``create`` makes missing folders (mode 0755). Raises :class:`OSError`
    (``ELOOP`` or ``ENOTDIR`` for a symlink on the way).
    """
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for name in parts_of(rel):
            try:
                nfd = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, 0o755, dir_fd=fd)
                nfd = os.open(name, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = nfd
        yield fd
    finally:
        os.close(fd)


def split(rel: str | PurePosixPath) -> tuple[str, str]:
    """``(parent, name)`` of a relative path with at least one component."""
    parts = parts_of(rel)
    if not parts:
        raise OSError(errno.EISDIR, "the folder itself, not a file in it")
    return "/".join(parts[:-1]), parts[-1]


def lstat(root: Path, rel: str | PurePosixPath) -> os.stat_result:
    """``lstat`` of ``root/rel`` (no symlink followed, the last one included)."""
    if not parts_of(rel):
        return os.stat(root)
    parent, name = split(rel)
    with open_dir(root, parent) as fd:
        return os.stat(name, dir_fd=fd, follow_symlinks=False)


def read_bytes(root: Path, rel: str | PurePosixPath, limit: int = 1 << 20) -> bytes:
    """At most ``limit`` bytes of the regular file ``root/rel``; a symlink or FIFO is refused."""
    parent, name = split(rel)
    with open_dir(root, parent) as dfd:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd)
    with os.fdopen(fd, "rb") as f:
        if not st.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        return f.read(limit)


def read_text(root: Path, rel: str | PurePosixPath) -> str | None:
    """Stripped text of ``root/rel``, or None when it is missing or not a plain file."""
    try:
        return read_bytes(root, rel).decode(errors="replace").strip()
    except OSError:
        return None


def write_atomic(root: Path, rel: str | PurePosixPath, data: str | bytes, *, mode: int = 0o644) -> None:
    """Replace ``root/rel`` with ``data`` (readers never see a partial value); folders are made."""
    parent, name = split(rel)
    raw = data.encode() if isinstance(data, str) else data
    with open_dir(root, parent, create=True) as dfd:
        tmp = f".{name}.tmp"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=dfd)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     mode, dir_fd=dfd)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(raw)
            os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dfd)
            raise


def create(root: Path, rel: str | PurePosixPath, *, mode: int = 0o644) -> int:
    """A write fd on ``root/rel``, truncated or made (with its folders); a symlink there is refused."""
    parent, name = split(rel)
    with open_dir(root, parent, create=True) as dfd:
        return os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                       mode, dir_fd=dfd)


def unlink(root: Path, rel: str | PurePosixPath) -> None:
    """Remove ``root/rel`` if it is there (a symlink is removed, not followed)."""
    parent, name = split(rel)
    try:
        with open_dir(root, parent) as dfd:
            os.unlink(name, dir_fd=dfd)
    except FileNotFoundError:
        pass


def relative(root: Path, path: Path) -> PurePosixPath:
    """``path`` relative to ``root`` (lexically); raises ``OSError(EPERM)`` when it is not inside."""
    try:
        rel = PurePosixPath(os.path.normpath(path)).relative_to(os.path.normpath(root))
    except ValueError:
        raise OSError(errno.EPERM, f"{path} is not inside {root}") from None
    parts_of(rel)
    return rel

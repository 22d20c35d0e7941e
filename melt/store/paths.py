"""Where melt keeps things on the host."""

from __future__ import annotations

import os
import re
from pathlib import Path

from melt.errors import OutputTooLargeError, UnsafePathError


def cache_dir() -> Path:
    """Build cache, downloaded sources, generated models: ``$MELT_CACHE_DIR`` or ``~/.cache/melt``."""
    return Path(os.environ.get("MELT_CACHE_DIR") or Path.home() / ".cache" / "melt").expanduser()


def default_results_dir() -> Path:
    """``$MELT_RESULTS_DIR`` or ``./results``."""
    return Path(os.environ.get("MELT_RESULTS_DIR") or "results")


def config_dir() -> Path:
    """melt's own settings (SSH known hosts and key): ``$MELT_CONFIG_DIR`` or ``~/.config/melt``."""
    env = os.environ.get("MELT_CONFIG_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base).expanduser() / "melt"


def confined(base: Path, name: str) -> Path:
    """``base / name`` for a ``name`` that came from outside (a device's listing, another host).

    ``name`` must be one plain file name: not empty, not ``.`` or ``..``, no
    ``/`` or ``\\``, no NUL or other control character, and ``base / name``
    must not already be a symlink (writing or reading through it would reach
    outside ``base``). Raises :class:`~melt.errors.UnsafePathError` saying which
    rule the name broke.
    """
    text = str(name)
    if not text or text in (".", ".."):
        why = "is not a file name"
    elif text.startswith("/"):
        why = "is an absolute path"
    elif "/" in text or "\\" in text:
        why = "names a path, not a file" if ".." not in text.replace("\\", "/").split("/") else "climbs out with '..'"
    elif any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        why = "holds a control character"
    else:
        path = Path(base) / text
        if not path.is_symlink():
            return path
        why = "is a symlink"
    raise UnsafePathError(f"refused the name {text!r} for a file in {base}: it {why}")


#: What a job id may look like in the store: it names the job's folder. melt's own ids are 16 hex
#: digits (:mod:`melt.runner.matrix`); the farm holds ids from workers to exactly that.
JOB_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
#: The only files a job's folder holds besides ``result.json`` (which the store writes itself).
JOB_FILE_NAMES = frozenset({"stdout.txt", "stderr.txt", "trace.parquet", "melt-traceback.txt"})
#: The largest file melt stores beside a job record (bytes).
MAX_JOB_FILE_BYTES = 256 * 1024 * 1024


def job_folder(jobs_dir: Path, job_id: object) -> Path:
    """The folder of job ``job_id`` under a run's ``jobs/`` folder, for an id that may come from outside.

    The id must be letters, digits, ``_`` and ``-`` (64 at most), and neither
    ``jobs_dir`` nor the job's folder may be a symlink. Raises
    :class:`~melt.errors.UnsafePathError`.
    """
    if not isinstance(job_id, str) or not JOB_ID_PATTERN.match(job_id):
        raise UnsafePathError(f"refused the job id {str(job_id)[:80]!r}: a job id is letters, digits, '_' and '-'")
    if Path(jobs_dir).is_symlink():
        raise UnsafePathError(f"refused to write in {jobs_dir}: it is a symlink")
    return confined(jobs_dir, job_id)


def job_file(job_dir: Path, name: object, size: int) -> Path:
    """Where a job's file ``name`` of ``size`` bytes goes in ``job_dir``, for a name that may come from outside.

    ``name`` must be one of :data:`JOB_FILE_NAMES`, the file no larger than
    :data:`MAX_JOB_FILE_BYTES`, and the path (see :func:`confined`) no
    symlink. Raises :class:`~melt.errors.UnsafePathError`, or
    :class:`~melt.errors.OutputTooLargeError` for a file over the limit.
    """
    path = confined(job_dir, str(name))  # names the rule a path-like name breaks
    if name not in JOB_FILE_NAMES:
        raise UnsafePathError(f"refused the file {str(name)[:80]!r} for a job: a job's files are "
                              f"{', '.join(sorted(JOB_FILE_NAMES))}")
    if size > MAX_JOB_FILE_BYTES:
        raise OutputTooLargeError(f"the job file {name!r} ({size:,} bytes)", MAX_JOB_FILE_BYTES)
    return path

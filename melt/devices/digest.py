"""The check that a pushed file's bytes on the device are the bytes melt sent.

After a push, the device hashes the file it holds (``sha256sum``) in the same
shell call that records it in the staging manifest. A file whose sha256 is not
that of the bytes sent (changed between push and check, or a device that
answers otherwise) is removed, never recorded, and the push is an error: the
job does not run it.
"""

from __future__ import annotations

import shlex
from pathlib import Path

MARK = "@melt-sha256 "
#: Exit status of :func:`check_script` when the digest differs.
MISMATCH = 4


def check_script(remote: str, sha256: str) -> str:
    """Shell that exits :data:`MISMATCH` (printing ``MARK`` and the device's digest) unless ``remote`` hashes to ``sha256``.

    A file that fails is removed. The script ends with ``;`` so more can follow.
    """
    q = shlex.quote
    return (f" d=$(sha256sum {q(remote)} 2>/dev/null); d=${{d%% *}};"
            f" [ \"$d\" = {q(sha256)} ] || {{ rm -f {q(remote)}; echo {q(MARK)}\"$d\"; exit {MISMATCH}; }};")


def mismatch_reason(local: Path, remote: str, sent: str, stdout: str) -> str:
    """The one-line reason a pushed file is refused, from the output of :func:`check_script`."""
    got = next((ln[len(MARK):].strip() for ln in stdout.splitlines() if ln.startswith(MARK)), "")
    said = f"the device holds sha256 {got[:64]!r}" if got else "the device gave no sha256 (no sha256sum?)"
    return f"push {local} -> {remote}: {said}, not {sent} as sent; the file was removed and is not run"

"""A job whose process is driven from the host while it runs (a server and its client).

:func:`run_beside` runs the on-device runner's blocking call in a thread and
calls ``during(live)`` on the calling thread meanwhile. ``live`` says whether
the runner (so the step) still runs, reads the step's stderr on the device,
and ends the step. When ``during`` returns or raises, the step is stopped
(SIGTERM to its process group); the caller aborts the runner on errors, as
for any interrupted job.
"""

from __future__ import annotations

import shlex
import threading
from typing import Any, Callable, Sequence

from melt.errors import CommandTimeout, TransportError
from melt.transports.base import CommandResult


class RunnerLive:
    """The running step of a runner job, seen from the host (the ``live`` of a client)."""

    def __init__(self, transport: Any, remote: str, thread: threading.Thread, step: int = 0):
        self.transport = transport
        self.remote = remote
        self._thread = thread
        self._step = step

    def running(self) -> bool:
        """False once the runner has finished (the step, and the job, ended)."""
        return self._thread.is_alive()

    def log(self) -> str:
        """The step's stderr so far."""
        path = shlex.quote(f"{self.remote}/err.{self._step}")
        try:
            return self.transport.shell(f"cat {path} 2>/dev/null", timeout=30, check=False).stdout
        except (TransportError, CommandTimeout):
            return ""

    def stop(self) -> None:
        """SIGTERM the running step's process group (its pid is in the runner's ``pid`` file)."""
        pidfile = shlex.quote(f"{self.remote}/pid")
        self.transport.shell(
            f'p=$(cat {pidfile} 2>/dev/null); [ -n "$p" ] && '
            f'{{ kill -TERM -- "-$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null; }}; true',
            timeout=30, check=False)


def run_beside(transport: Any, argv: Sequence[str], *, timeout: float, remote: str,
               during: Callable[[RunnerLive], Any]) -> tuple[CommandResult, Any]:
    """Run ``argv`` (the runner) in a thread while ``during(live)`` runs here.

    Returns the runner's result and what ``during`` returned. Whatever
    ``during`` does, the step is stopped when it is done; its exception (or
    the runner's) propagates.
    """
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["done"] = transport.run(list(argv), timeout=timeout, check=False)
        except BaseException as exc:  # handed to the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name="melt-runner", daemon=True)
    thread.start()
    live = RunnerLive(transport, remote, thread)
    try:
        result = during(live)
    finally:
        if thread.is_alive():
            try:
                live.stop()
            except (TransportError, CommandTimeout, OSError):
                pass
    thread.join(timeout)
    if "error" in box:
        raise box["error"]
    if "done" not in box:
        raise CommandTimeout(f"the job runner did not finish within {timeout:g} s")
    return box["done"], result

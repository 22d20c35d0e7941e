"""The process tree a virtual phone runs: CPU time, stop/continue, orphans.

The phone process makes itself a *child subreaper*, so what its shells start
in the background (``nohup ... &``) stays in its tree instead of going to
init. The tree's CPU time is the sum over live descendants of
``utime + stime + cutime + cstime`` plus the phone's own ``cutime + cstime``
(children already reaped). It is read from ``/proc`` (Linux only).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36
CLK_TCK = os.sysconf("SC_CLK_TCK")


def become_subreaper() -> bool:
    """Make this process the reaper of its orphaned descendants; False if refused."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


_HAS_CHILDREN_FILES = Path(f"/proc/self/task/{os.getpid()}/children").exists()


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from every thread's ``children`` file, else a scan)."""
    if not _HAS_CHILDREN_FILES:  # kernels without CONFIG_PROC_CHILDREN
        return [
            int(name) for name in os.listdir("/proc")
            if name.isdigit() and (f := _stat_fields(int(name))) is not None and int(f[1]) == pid
        ]
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            text = Path(f"/proc/{pid}/task/{tid}/children").read_text()
        except OSError:
            continue
        out.extend(int(x) for x in text.split())
    return out


def descendants(root: int) -> list[int]:
    """Every live descendant of ``root`` (not ``root`` itself), parents first."""
    out: list[int] = []
    todo = children(root)
    seen: set[int] = set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        out.append(pid)
        todo.extend(children(pid))
    return out


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name may hold spaces and parentheses: split after the last ')'
    return raw[raw.rindex(")") + 2:].split()


def cpu_ticks(pid: int, *, own: bool = True, reaped: bool = True) -> int:
    """Clock ticks used by ``pid``: its own (utime+stime) and its reaped children's."""
    f = _stat_fields(pid)
    if f is None:
        return 0
    # fields after the name: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14)
    total = 0
    if own:
        total += int(f[11]) + int(f[12])
    if reaped:
        total += int(f[13]) + int(f[14])
    return total


def state_of(pid: int) -> str | None:
    """One-letter process state (R, S, Z, T ...), or None once it is gone."""
    f = _stat_fields(pid)
    return f[0] if f else None


class CpuMeter:
    """Cumulative CPU seconds of everything below ``root`` (never decreases).

    A process that exits between two reads may briefly drop out of the sum
    before its parent reaps it; the meter keeps the running maximum so such
    dips never count twice.
    """

    def __init__(self, root: int | None = None):
        self.root = os.getpid() if root is None else root
        self._max_ticks = self._ticks()

    def _ticks(self) -> int:
        total = cpu_ticks(self.root, own=False)
        for pid in descendants(self.root):
            total += cpu_ticks(pid)
        return total

    def seconds(self) -> float:
        """CPU seconds used by the tree since the meter was made."""
        ticks = self._ticks()
        if ticks > self._max_ticks:
            self._max_ticks = ticks
        return self._max_ticks / CLK_TCK


def signal_tree(root: int, sig: int) -> int:
    """Send ``sig`` to every descendant of ``root``; returns how many got it."""
    n = 0
    for pid in descendants(root):
        try:
            os.kill(pid, sig)
            n += 1
        except ProcessLookupError:
            pass
    return n


class OrphanReaper:
    """Reaps zombies that were reparented to this (subreaper) process.

    Children the phone spawned itself are waited for by asyncio; a zombie
    child that is not in ``spawned`` and is still a zombie on the next sweep
    is an adopted orphan, and is reaped here.
    """

    def __init__(self, spawned: set[int]):
        self.spawned = spawned
        self._zombies_last: set[int] = set()

    def sweep(self) -> None:
        zombies = {
            pid for pid in children(os.getpid())
            if pid not in self.spawned and state_of(pid) == "Z"
        }
        for pid in zombies & self._zombies_last:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
        self._zombies_last = zombies


def kill_marked(entry: str) -> int:
    """SIGKILL every process whose environment holds ``entry`` (``NAME=value``).

    A phone that was killed outright leaves what its shells started running;
    its next start on the same port clears them, as a reboot would.
    """
    marker, n = entry.encode(), 0
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            env = Path(f"/proc/{name}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if marker in env:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(name), signal.SIGKILL)
                n += 1
    return n


def kill_tree(root: int) -> None:
    """SIGCONT then SIGKILL every descendant of ``root`` (used at shutdown)."""
    signal_tree(root, signal.SIGCONT)
    signal_tree(root, signal.SIGKILL)

"""Rich progress columns that a person can read: counts, or sizes with rate and time left."""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.filesize import decimal
from rich.progress import ProgressColumn, Task
from rich.text import Text


def describe_transfer(done: float, total: float | None, speed: float | None, remaining: float | None) -> str:
    """``"10.9 MB/93.2 MB 4.1 MB/s 0:20 left"``: decimal units (as elsewhere in melt); an
    unknown rate or time left is left out rather than shown as zero."""
    size = f"{decimal(int(done))}/{decimal(int(total))}" if total else decimal(int(done))
    parts = [size]
    if speed:
        parts.append(f"{decimal(int(speed))}/s")
    if remaining is not None and speed:
        minutes, seconds = divmod(int(remaining + 0.5), 60)
        parts.append(f"{minutes}:{seconds:02d} left")
    return " ".join(parts)


class CountColumn(ProgressColumn):
    """``done/total`` for job rows; for rows added with ``bytes=True`` the sizes in
    human units, the transfer rate and the time left; ``percent=True``: the share done."""

    def render(self, task: Task) -> Text:
        """Render one row's count (see the class doc)."""
        if task.fields.get("bytes"):
            return Text(describe_transfer(task.completed, task.total, task.speed, task.time_remaining))
        if task.fields.get("percent"):
            return Text(f"{task.completed:3.0f}%")
        total = int(task.total) if task.total is not None else "?"
        return Text(f"{int(task.completed)}/{total}")


class PlainProgress:
    """Progress for a log or a pipe: a plain line now and then instead of a redrawn bar.

    Call it as ``progress(done, total)``; it prints ``"<label> 10.9 MB/93.2 MB
    2.0 MB/s 0:40 left"`` through ``emit`` at most every ``every_s`` seconds, and
    once more when the transfer completes.
    """

    def __init__(self, label: str, emit: Callable[[str], None], every_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.label, self.emit, self.every_s, self.clock = label, emit, every_s, clock
        self.started: float | None = None
        self.last: float | None = None
        self.finished = False

    def __call__(self, done: int, total: int) -> None:
        now = self.clock()
        if self.started is None:
            self.started = now
        complete = bool(total) and done >= total
        due = self.last is None or now - self.last >= self.every_s
        if self.finished or not (due or complete):
            return
        elapsed = now - self.started
        speed = done / elapsed if elapsed > 0 else None
        remaining = (total - done) / speed if speed and total else None
        self.emit(f"{self.label} {describe_transfer(done, total, speed, remaining)}")
        self.last, self.finished = now, complete

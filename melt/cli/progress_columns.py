"""Rich progress columns that a person can read: counts, or sizes with rate and time left."""

from __future__ import annotations

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
    human units, the transfer rate and the time left."""

    def render(self, task: Task) -> Text:
        """Render one row's count (see the class doc)."""
        if task.fields.get("bytes"):
            return Text(describe_transfer(task.completed, task.total, task.speed, task.time_remaining))
        total = int(task.total) if task.total is not None else "?"
        return Text(f"{int(task.completed)}/{total}")

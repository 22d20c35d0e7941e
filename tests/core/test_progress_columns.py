"""Push rows of the run display: sizes in human units, a rate and the time left."""

from __future__ import annotations

import io

from rich.console import Console
from rich.progress import Progress

from melt.cli.progress_columns import CountColumn, PlainProgress, describe_transfer


class FakeClock:
    """A clock the test moves by hand, so the rate is known exactly."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_push_row_shows_sizes_rate_and_time_left() -> None:
    clock = FakeClock()
    out = io.StringIO()
    console = Console(file=out, width=120, force_terminal=False)
    progress = Progress(CountColumn(), console=console, get_time=clock, auto_refresh=False)
    push = progress.add_task("push model", total=100_000_000, bytes=True)
    jobs = progress.add_task("all jobs", total=4, completed=1)
    for step in range(1, 6):
        clock.now = float(step)
        progress.update(push, completed=step * 2_000_000)
    rendered = CountColumn().render(progress.tasks[push]).plain
    assert rendered.startswith("10.0 MB/100.0 MB"), rendered
    assert "2.0 MB/s" in rendered, rendered
    assert "0:45 left" in rendered, rendered  # 90 MB at 2 MB/s
    assert "10000000" not in rendered
    assert CountColumn().render(progress.tasks[jobs]).plain == "1/4"


def test_an_unknown_rate_is_left_out_not_zero() -> None:
    assert describe_transfer(11_401_752, 93_000_000, None, None) == "11.4 MB/93.0 MB"


def test_plain_progress_prints_readable_lines_now_and_then() -> None:
    clock = FakeClock()
    lines: list[str] = []
    plain = PlainProgress("push model", lines.append, every_s=5.0, clock=clock)
    total = 50_000_000
    for second in range(0, 26):
        clock.now = float(second)
        plain(second * 2_000_000, total)
    # at 0 s, every 5 s after, and the completion at 25 s (which is also a 5 s mark)
    assert len(lines) == 6, lines
    assert lines[1] == "push model 10.0 MB/50.0 MB 2.0 MB/s 0:20 left", lines
    assert lines[-1].startswith("push model 50.0 MB/50.0 MB"), lines
    assert not any(ch.isdigit() and len(tok) > 6 for tok in " ".join(lines).split() for ch in tok[:1])

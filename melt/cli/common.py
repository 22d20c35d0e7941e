"""Options and helpers shared by the CLI command modules."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from melt.store.paths import default_results_dir


def results_option(f):
    return click.option(
        "--results",
        "results_dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Results folder (default: $MELT_RESULTS_DIR or ./results).",
    )(f)


def results_path(value: Path | None) -> Path:
    return value if value is not None else default_results_dir()


def json_option(f):
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")(f)


def echo_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, default=str))


def console(*, stderr: bool = False):
    """A Rich console that prints every string as text, never as markup.

    Names, reasons and paths come from users and devices (``[red]w[/red]``,
    ``[/data]``, ``[kworker/0:1]``): styles are given with ``style=`` or
    :class:`rich.text.Text`, never inside strings. Away from a terminal Rich
    uses $COLUMNS or 80 columns.
    """
    from rich.console import Console

    return Console(stderr=stderr, markup=False, highlight=False, emoji=False)


def hanging(text: str, width: int, indent: str) -> str:
    """``text`` wrapped to ``width`` columns, every line starting with ``indent``.

    Its own line breaks are kept; a word longer than a line is split, never
    cut. For long values and reasons printed under a heading.
    """
    import textwrap

    lines = []
    for line in text.splitlines() or [""]:
        lines += textwrap.wrap(line, width=max(len(indent) + 10, width), initial_indent=indent,
                               subsequent_indent=indent, break_on_hyphens=False,
                               drop_whitespace=True) or [indent.rstrip()]
    return "\n".join(lines)


def stderr_console():
    return console(stderr=True)


def is_interactive() -> bool:
    return sys.stderr.isatty()

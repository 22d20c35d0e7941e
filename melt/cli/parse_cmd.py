"""``melt parse``: run one of melt's output parsers on a captured file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from melt.errors import MeltError, ParseError
from melt.parsers import KINDS, parse as parse_text

_KINDS_HELP = "\n".join(f"  {name}" for name in KINDS)


class CaptureNotFound(MeltError):
    """The capture file given to ``melt parse`` cannot be read."""


def _flat(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _fits(columns: list[str], rows: list[list[str]], width: int) -> bool:
    """True when a bordered table shows every header and value unbroken within ``width``."""
    widths = [max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(columns)]
    return sum(w + 3 for w in widths) + 1 <= width


def _show(kind: str, records: list[dict[str, Any]]) -> None:
    """A table when every value fits the console's width unbroken (a CI log has 80
    columns), otherwise one block per record, long values wrapped, never cut."""
    from rich.table import Table
    from rich.text import Text

    from melt.cli.common import console as make_console
    from melt.cli.common import hanging

    console = make_console()
    console.print(f"kind: {kind}  records: {len(records)}")
    if not records:
        return
    columns: list[str] = []
    for rec in records:
        columns += [k for k in rec if k not in columns]
    rows = [["" if rec.get(c) is None else _flat(rec[c]) for c in columns] for rec in records]
    if len(columns) <= 8 and _fits(columns, rows, console.width):
        table = Table(show_header=True, header_style="bold")
        for col in columns:
            table.add_column(col, overflow="fold")
        for row in rows:
            table.add_row(*row)
        console.print(table)
        return
    for i, rec in enumerate(records):
        console.print(f"record {i}", style="bold")
        for key, value in rec.items():
            console.print(Text(hanging(f"{key}: {_flat(value)}", console.width, "  ")))


@click.command(
    "parse",
    help=f"""Parse a captured output FILE into records.

The kind is detected from the text unless --kind is given. Known kinds:

\b
{_KINDS_HELP}

\b
Examples:
  melt parse llama.log                       detect, print a table
                                             (a block per record when a
                                             table would not fit)
  melt parse tegrastats.log --json           {{"kind": ..., "records": [...]}}
  melt parse bench.json --kind llama-bench --json
""",
)
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--kind", "kind", metavar="KIND", default=None, help="Parser kind; detected when omitted.")
@click.option("--json", "as_json", is_flag=True, help='Print {"kind": KIND, "records": [...]} as JSON.')
def parse(file: Path, kind: str | None, as_json: bool) -> None:
    """Parse a captured output file with melt's parsers."""
    try:
        text = file.read_bytes().decode("utf-8", errors="replace")
    except OSError as exc:
        raise CaptureNotFound(f"cannot read {file}: {exc.strerror or exc}") from exc
    try:
        found_kind, records = parse_text(text, kind)
    except ParseError as exc:
        raise ParseError(f"{file}: {exc}") from exc
    if as_json:
        click.echo(json.dumps({"kind": found_kind, "records": records}, indent=2, ensure_ascii=False))
    else:
        _show(found_kind, records)

"""``melt schema``: JSON Schemas of melt's file kinds."""

from __future__ import annotations

import click

from melt.config.schemas import SCHEMAS


@click.command()
@click.argument("kind", type=click.Choice(sorted(SCHEMAS)))
def schema(kind: str) -> None:
    """Print the JSON Schema of KIND files, for editors to autocomplete.

    \b
    Example (VS Code with the YAML extension):
      melt schema experiment > .vscode/melt-experiment.schema.json
    """
    from melt.config.loader import json_schema

    click.echo(json_schema(kind))

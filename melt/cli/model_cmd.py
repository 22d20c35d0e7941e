"""``melt model``: model files melt makes itself."""

from __future__ import annotations

import hashlib
from pathlib import Path

import click

from melt.cli.common import echo_json, json_option


@click.group()
def model() -> None:
    """Make model files to try melt with, no model hub needed."""


@model.command()
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--seed", default=0, show_default=True, type=int,
              help="Random seed of the weights; the same seed writes the same bytes.")
@json_option
def tiny(out: Path, seed: int, as_json: bool) -> None:
    """Write a tiny random-weight llama model (GGUF, about 270 KB) to OUT.

    It loads in llama.cpp and runs llama-bench and llama-completion for real;
    its text is noise, its speed is real. Example: melt model tiny tiny.gguf
    """
    from melt.models.tiny import write_tiny_model

    path = write_tiny_model(out, seed=seed)
    data = path.read_bytes()
    info = {"path": str(path), "size_bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
            "seed": seed}
    if as_json:
        echo_json(info)
    else:
        click.echo(f"{path}  {info['size_bytes']} bytes  sha256 {info['sha256']}")

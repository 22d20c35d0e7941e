"""``melt build``: build a framework for a target profile (cached)."""

from __future__ import annotations

import re

import click

from melt.cli.common import echo_json, is_interactive, json_option, stderr_console

_STEP = re.compile(r"^\[(\d+)/(\d+)\]")


@click.command()
@click.option("--framework", "framework_name", default="llama.cpp", show_default=True,
              help="Framework to build.")
@click.option("--profile", default="host", show_default=True,
              help="Build profile: host, arm64 (static, for phones), arm64-baseline, android-arm64 "
                   "(NDK), linux-aarch64, jetson-cuda.")
@click.option("--source", default=None, metavar="PATH|git+URL@REF",
              help="Source tree instead of the pinned one: a folder, an sdist .tar.gz, "
                   "git+URL@REF or pypi:VERSION.")
@click.option("--force", is_flag=True, help="Rebuild even when a cached build matches.")
@json_option
def build(framework_name: str, profile: str, source: str | None, force: bool, as_json: bool) -> None:
    """Build a framework for one target profile and print where the binaries are.

    Builds are cached under ~/.cache/melt/builds ($MELT_CACHE_DIR overrides):
    an unchanged source, profile and flags give the same build at once.
    Cross profiles need their toolchain (aarch64-linux-gnu-g++ for the arm64
    ones, the Android NDK via $ANDROID_NDK_HOME or $ANDROID_NDK, or nvcc on a
    Jetson). `melt run` picks a device's profile by its CPU ABI by itself.
    """
    from melt.frameworks.registry import get_framework

    framework = get_framework(framework_name)
    if is_interactive():
        console = stderr_console()
        with console.status(f"building {framework_name} ({profile})") as status:

            def on_output(line: str) -> None:
                step = _STEP.match(line)
                if step:
                    status.update(f"building {framework_name} ({profile}) "
                                  f"{step.group(1)}/{step.group(2)}")
                elif line.startswith(("cmake ", "downloading", "unpacking", "fetching", "copying",
                                      "hashing", "patch ")):
                    status.update(f"{framework_name} ({profile}): {line}")

            result = framework.build(profile, source=source, force=force, on_output=on_output)
    else:
        result = framework.build(profile, source=source, force=force)

    prov = result.provenance
    if as_json:
        echo_json({
            "dir": str(result.dir),
            "bin_dir": str(result.bin_dir),
            "cached": result.cached,
            "binaries": {name: str(path) for name, path in result.binaries.items()},
            "provenance": prov,
        })
        return
    how = "cached" if result.cached else f"built in {prov.get('build_seconds', 0):.0f} s"
    src = prov.get("source", {})
    compiler = prov.get("compiler") or {}
    click.echo(f"{framework_name} {profile}: {result.dir} ({how})")
    click.echo(f"  commit    {prov.get('llama_cpp_commit') or prov.get('build_commit') or 'unknown'}"
               f" (version {prov.get('llama_cpp_version') or '?'})")
    click.echo(f"  source    {src.get('spec', '?')} sha256 {str(src.get('sha256', ''))[:16]}")
    click.echo(f"  compiler  {compiler.get('id') or '?'} {compiler.get('version') or ''}".rstrip())
    click.echo(f"  binaries  {', '.join(sorted(result.binaries))} in {result.bin_dir}")

"""``melt build``: build a framework for a target profile (cached)."""

from __future__ import annotations

import click

from melt.cli.build_progress import build_step, step_bar
from melt.cli.common import echo_json, is_interactive, json_option, stderr_console



@click.command()
@click.option("--framework", "framework_name", default="llama.cpp", show_default=True,
              help="Framework to build.")
@click.option("--profile", default="host", show_default=True,
              help="Build profile: host, arm64 (static, for phones), arm64-baseline, android-arm64 "
                   "(NDK), linux-aarch64, jetson-cuda.")
@click.option("--source", default=None, metavar="PATH|git+URL@REF",
              help="Source tree instead of the pinned one: a folder, an sdist .tar.gz, "
                   "git+URL@REF or pypi:VERSION#sha256=HEX.")
@click.option("--force", is_flag=True, help="Rebuild even when a cached build matches.")
@click.option("--target", "targets", multiple=True, metavar="NAME",
              help="A binary to build (repeatable), e.g. --target llama-server. Default: all but "
                   "llama-server, which is built when a serve, conversation or sustained job needs it.")
@click.option("--all", "all_targets", is_flag=True, help="Build every binary the profile can build.")
@json_option
def build(framework_name: str, profile: str, source: str | None, force: bool, targets: tuple[str, ...],
          all_targets: bool, as_json: bool) -> None:
    """Build a framework for one target profile and print where the binaries are.

    Builds are cached under ~/.cache/melt/builds ($MELT_CACHE_DIR overrides):
    an unchanged source, profile and flags give the same build at once, and
    a binary added later (--target llama-server, or a job that needs it)
    compiles only what it adds. Cross profiles need their toolchain
    (aarch64-linux-gnu-g++ for the arm64 ones, the Android NDK via
    $ANDROID_NDK_HOME or $ANDROID_NDK, or nvcc on a Jetson). `melt run`
    picks a device's profile by its CPU ABI and builds what its jobs run.

    \b
    Examples:
      melt build                          llama-bench, llama-completion, llama-quantize
      melt build --target llama-server    add llama-server to that build
      melt build --profile arm64 --all    every binary, cross-compiled for arm64
    """
    from melt.frameworks.registry import get_framework

    framework = get_framework(framework_name)
    wanted: list[str] | None = list(targets) or None
    if all_targets:
        if targets:
            raise click.UsageError("give --all or --target, not both")
        if framework_name == "llama.cpp":
            from melt.frameworks.llamacpp.recipe import load_recipe

            wanted = list(load_recipe().profile(profile).targets)
    if is_interactive():
        console = stderr_console()
        with console.status(f"building {framework_name} ({profile})") as status:

            def on_output(line: str) -> None:
                step = build_step(line)
                if step:
                    status.update(f"building {framework_name} ({profile}) "
                                  f"{step_bar(step.percent)} {step.doing}")
                elif line.startswith(("cmake ", "downloading", "unpacking", "fetching", "copying",
                                      "hashing", "patch ")):
                    status.update(f"{framework_name} ({profile}): {line}")

            result = framework.build(profile, source=source, force=force, on_output=on_output,
                                     targets=wanted)
    else:
        console = stderr_console()
        shown = [-10.0]

        def plain_output(line: str) -> None:
            # a log or pipe: one plain line per tenth of the build, not a redrawn bar
            step = build_step(line)
            if step and step.percent is not None and step.percent >= shown[0] + 10:
                shown[0] = step.percent
                console.print(f"building {framework_name} ({profile}) {step.percent:.0f}% {step.doing}",
                              markup=False, soft_wrap=True)

        result = framework.build(profile, source=source, force=force, on_output=plain_output,
                                 targets=wanted)

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
    if prov.get("stand_in"):  # MLC's stand-in: what it is, then the llama.cpp build doing its work
        click.echo(f"{framework_name} {profile}: {prov.get('stand_in_note') or 'a stand-in'}")
        prov = prov.get("llama.cpp") or {}
    how = "cached" if result.cached else f"built in {prov.get('build_seconds', 0):.0f} s"
    added = prov.get("added") or []
    if not result.cached and added:  # this call added binaries to an existing build
        how = f"added {', '.join(added[-1]['targets'])} in {added[-1]['build_seconds']:.0f} s"
    src = prov.get("source", {})
    compiler = prov.get("compiler") or {}
    click.echo(f"{framework_name} {profile}: {result.dir} ({how})")
    click.echo(f"  commit    {prov.get('llama_cpp_commit') or prov.get('build_commit') or 'unknown'}"
               f" (version {prov.get('llama_cpp_version') or '?'})")
    click.echo(f"  source    {src.get('spec', '?')} sha256 {str(src.get('sha256', ''))[:16]}")
    click.echo(f"  compiler  {compiler.get('id') or '?'} {compiler.get('version') or ''}".rstrip())
    click.echo(f"  binaries  {', '.join(sorted(result.binaries))} in {result.bin_dir}")

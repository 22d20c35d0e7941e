"""``melt virtual``: start, list, stop, heat and throttle virtual devices."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

DEFAULT_CONFIG = Path("device_configs/virtual-phone.yaml")


def _state_dir(value: str | None) -> Path:
    from melt.virtual.registry import default_state_dir

    return Path(value) if value else default_state_dir()


state_dir_option = click.option(
    "--state-dir", default=None, metavar="DIR",
    help="Where phones keep their records and files (default: $MELT_VIRTUAL_STATE_DIR "
         "or ~/.local/state/melt/virtual).",
)


@click.group()
def virtual() -> None:
    """Virtual devices that behave like real ones (their data is labelled simulated).

    \b
      melt virtual start android --detach     prints 127.0.0.1:PORT
      adb connect 127.0.0.1:PORT
      melt virtual start jetson --detach      prints 127.0.0.1:PORT (its sshd)
      melt devices trust virtual-jetson
      melt virtual start ios --detach         prints 127.0.0.1:PORT (its services)
      melt virtual start endpoint --detach    llama-server on 127.0.0.1:18080, with an API key
      export MELT_LOOPBACK_KEY="$(melt virtual key 18080)"
      melt virtual list
      melt virtual stop 127.0.0.1:PORT
    """


@virtual.group()
def start() -> None:
    """Start a virtual device."""


@start.command()
@click.option("--port", type=click.IntRange(0, 65535), default=None,
              help="Loopback port (default: the config's, 15555; 0 picks one).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help=f"Device config with a `virtual:` section (default: {DEFAULT_CONFIG} when present).")
@click.option("--abi", type=click.Choice(["arm64-v8a", "x86_64", "host"]), default=None,
              help="CPU ABI it reports and runs (default: the config's, arm64-v8a); host: this "
                   "machine's. Code of another ABI than this machine's runs under qemu-user.")
@click.option("--detach", is_flag=True, help="Run in the background and return once it listens.")
@click.option("--unisolated", is_flag=True,
              help="Run even where bubblewrap does not work: the phone's commands (charging "
                   "writes, rm -rf of its folders) then run on this host, as you. "
                   "Also MELT_VIRTUAL_UNISOLATED=1.")
@state_dir_option
def android(port: int | None, config_path: str | None, abi: str | None, detach: bool,
            unisolated: bool,
            state_dir: str | None) -> None:
    """Start a virtual Android phone speaking the ADB device protocol on 127.0.0.1.

    Prints the address to give `adb connect`. Without --detach it runs until
    Ctrl-C or `melt virtual stop ADDRESS`. An arm64-v8a phone on an x86-64
    machine runs its arm64 binaries under qemu-user (emulated: slower).
    """
    from melt.virtual.config import load_config

    if config_path is None and DEFAULT_CONFIG.is_file():
        config_path = str(DEFAULT_CONFIG)
    config = load_config(config_path)
    if abi is not None:
        from melt.devices.abi import host_abi

        config = config.model_copy(update={"abi": host_abi() if abi == "host" else abi})
    port = config.port if port is None else port
    folder = _state_dir(state_dir)
    if detach:
        from melt.virtual.phone import VirtualPhone

        phone = VirtualPhone(config, port=port, state_dir=folder, unisolated=unisolated)
        click.echo(phone.start())
        return

    from melt.virtual.runtime import serve

    def ready(address: str) -> None:
        click.echo(address)
        click.echo(f"adb connect {address}    (Ctrl-C or `melt virtual stop {address}` to stop)",
                   err=True)

    try:
        serve(config, port=port, state_dir=folder, on_ready=ready, allow_unisolated=unisolated)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}")


JETSON_CONFIG = Path("device_configs/virtual-jetson.yaml")


@start.command()
@click.option("--port", type=int, default=None, help="Loopback port of its sshd (default: the config's, 15022; 0 picks one).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help=f"Device config with a `virtual:` section (default: {JETSON_CONFIG} when present).")
@click.option("--detach", is_flag=True, help="Run in the background and return once sshd listens.")
@state_dir_option
def jetson(port: int | None, config_path: str | None, detach: bool, state_dir: str | None) -> None:
    """Start a virtual Jetson: Debian's sshd on 127.0.0.1 in front of a simulated board.

    Prints the address its sshd listens on. It logs in with keys only (melt's
    own key, made on first use, and your ~/.ssh/*.pub) and is not trusted
    for you: run `melt devices trust virtual-jetson` once, after checking
    the fingerprint it shows. Without --detach it runs until Ctrl-C or
    `melt virtual stop ADDRESS`.
    """
    from melt.virtual.jetson_config import load_jetson_config

    if config_path is None and JETSON_CONFIG.is_file():
        config_path = str(JETSON_CONFIG)
    config = load_jetson_config(config_path)
    port = config.port if port is None else port
    folder = _state_dir(state_dir)
    if detach:
        from melt.virtual.jetson import VirtualJetson

        click.echo(VirtualJetson(config, port=port, state_dir=folder).start())
        return

    from melt.virtual.jetson import run_jetson

    def ready(address: str) -> None:
        click.echo(address)
        click.echo(f"ssh on {address}    (Ctrl-C or `melt virtual stop {address}` to stop)", err=True)

    run_jetson(config, port=port, state_dir=folder, on_ready=ready)


@start.command()
@click.option("--port", type=click.IntRange(0, 65535), default=18080, show_default=True,
              help="Loopback port (0 picks one).")
@click.option("--model", default="gemma3-270m", show_default=True,
              help="A catalogue model (melt model list) or a GGUF file.")
@click.option("--threads", type=click.IntRange(1, 256), default=2, show_default=True)
@click.option("--slots", type=click.IntRange(1, 64), default=2, show_default=True,
              help="Requests the server decodes at once.")
@click.option("--detach", is_flag=True, help="Run in the background and return once it answers.")
@state_dir_option
def endpoint(port: int, model: str, threads: int, slots: int, detach: bool, state_dir: str | None) -> None:
    """Start an OpenAI-compatible endpoint on 127.0.0.1: melt's llama-server build serving MODEL.

    It takes a fresh API key, kept in a private file (never on a command
    line); `melt virtual key PORT` prints it for the variable a device
    config names (device_configs/loopback-endpoint.yaml: MELT_LOOPBACK_KEY).
    It is a real server, not simulated. Without --detach it runs until
    Ctrl-C; `melt virtual stop 127.0.0.1:PORT` stops it either way.
    """
    from melt.virtual.endpoint import free_port, main, start_detached

    port = port or free_port()
    folder = _state_dir(state_dir)
    if detach:
        address = start_detached(port, folder, model=model, threads=threads, ctx_size=4096, slots=slots)
        click.echo(address)
        click.echo(f'export MELT_LOOPBACK_KEY="$(melt virtual key {port})"    (its API key)', err=True)
        return
    code = main(["--port", str(port), "--state-dir", str(folder), "--model", model, "--threads", str(threads),
                 "--slots", str(slots)])
    if code:
        raise click.ClickException("the loopback endpoint stopped with an error")


@virtual.command()
@click.argument("port", type=click.IntRange(1, 65535))
@state_dir_option
def key(port: int, state_dir: str | None) -> None:
    """Print the API key of the loopback endpoint on PORT (for an environment variable)."""
    from melt.virtual.endpoint import read_key

    click.echo(read_key(_state_dir(state_dir), port))


IPHONE_CONFIG = Path("device_configs/virtual-iphone.yaml")


@start.command()
@click.option("--port", type=click.IntRange(0, 65535), default=None,
              help="Loopback port of its services (default: the config's, 15556; 0 picks one).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help=f"Device config with a `virtual:` section (default: {IPHONE_CONFIG} when present).")
@click.option("--detach", is_flag=True, help="Run in the background and return once it listens.")
@state_dir_option
def ios(port: int | None, config_path: str | None, detach: bool, state_dir: str | None) -> None:
    """Start a virtual iPhone: melt's iPhone services on 127.0.0.1, its app on this machine's llama.cpp.

    Prints the address a device config names as `ios: {virtual: ADDRESS}`.
    Its app runs the cached host build's llama-bench and llama-completion
    under the app contract; its thermal state and energy impact follow the
    CPU the app uses (all simulated). Without --detach it runs until Ctrl-C
    or `melt virtual stop ADDRESS`.
    """
    from melt.virtual.iphone_config import load_iphone_config

    if config_path is None and IPHONE_CONFIG.is_file():
        config_path = str(IPHONE_CONFIG)
    config = load_iphone_config(config_path)
    port = config.port if port is None else port
    folder = _state_dir(state_dir)
    from melt.frameworks.llamacpp.build import host_build

    # its app runs this machine's build: made here, in the foreground, the first time
    click.echo("llama.cpp host build for the iPhone's app: "
               f"{host_build(targets=['llama-bench', 'llama-completion']).bin_dir}", err=True)
    if detach:
        from melt.virtual.iphone import VirtualIphone

        click.echo(VirtualIphone(config, port=port, state_dir=folder).start())
        return

    from melt.virtual.iphone import run_iphone

    def ready(address: str) -> None:
        click.echo(address)
        click.echo(f"iPhone services on {address}    (Ctrl-C or `melt virtual stop {address}` to stop)",
                   err=True)

    try:
        run_iphone(config, port=port, state_dir=folder, on_ready=ready)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}")


@virtual.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per phone.")
@state_dir_option
def list_(as_json: bool, state_dir: str | None) -> None:
    """List the virtual devices that run now."""
    from dataclasses import asdict

    from melt.virtual.registry import list_phones

    phones = list_phones(_state_dir(state_dir))
    if as_json:
        click.echo(json.dumps([asdict(p) for p in phones], indent=2))
        return
    if not phones:
        click.echo("No virtual devices running.")
        return
    click.echo(f"{'ADDRESS':<22} {'KIND':<8} {'PID':>7} {'UPTIME':>8}  ISOLATION  {'ABI':<10} "
               f"{'CODE RUNS':<9}  FILES")
    for p in phones:
        uptime = f"{time.time() - p.started_at:.0f}s"
        click.echo(f"{p.address:<22} {p.kind:<8} {p.pid:>7} {uptime:>8}  {p.isolation:<9}  "
                   f"{p.abi or '?':<10} {p.emulation or '?':<9}  {p.root}")


@virtual.command()
@click.argument("address")
@state_dir_option
def stop(address: str, state_dir: str | None) -> None:
    """Stop the virtual device at ADDRESS (host:port, or just the port)."""
    from melt.virtual.registry import stop_phone

    record = stop_phone(address, _state_dir(state_dir))
    click.echo(f"stopped {record.address}")


@virtual.command()
@click.argument("address")
@click.argument("celsius", type=float)
@click.option("--node", type=click.Choice(["all", "soc", "body"]), default="all", show_default=True,
              help="Model node to set: the SoC die, the body (battery) or both.")
@state_dir_option
def heat(address: str, celsius: float, node: str, state_dir: str | None) -> None:
    """Set the temperature of the device at ADDRESS to CELSIUS (it then cools by itself)."""
    from melt.virtual.phone import send_control
    from melt.virtual.registry import find_phone

    send_control(find_phone(address, _state_dir(state_dir)), "temperature", f"{node}={celsius}")


@virtual.command()
@click.argument("address")
@click.argument("mode", type=click.Choice(["on", "off", "auto"]))
@state_dir_option
def throttle(address: str, mode: str, state_dir: str | None) -> None:
    """Force throttling of the device at ADDRESS on or off, or leave it to temperature (auto)."""
    from melt.virtual.phone import send_control
    from melt.virtual.registry import find_phone

    send_control(find_phone(address, _state_dir(state_dir)), "throttle", mode)

"""``melt farm``: serve devices to a farm, and see what the farm is doing."""

from __future__ import annotations

import signal
from pathlib import Path

import click

from melt.cli.common import echo_json, json_option, stderr_console

BROKER_HELP = "Redis broker, redis://[:PASSWORD@]HOST:6379/0 (or $MELT_FARM_BROKER)."


@click.group()
def farm() -> None:
    """Run devices of many hosts as one farm (Celery workers, Redis broker).

    \b
    On one machine (redis-server on loopback, a worker per running virtual device):
      melt farm up
      melt run experiments/quickstart-android.yaml --farm
      melt farm down
    \b
    Across hosts: once, then copy the key file to every farm host (or set $MELT_FARM_KEY):
      melt farm key new
    On each host with devices attached:
      melt farm worker --broker redis://HOST:6379/0 --device pixel8 --device orin
    From anywhere:
      melt run experiments/sweep.yaml --farm redis://HOST:6379/0
      melt farm status --broker redis://HOST:6379/0

    Job messages and results are signed with the farm key (not the broker
    password); a host without it can neither give work nor send results.
    Needs the farm extra (pip install -e '.[farm]' in melt's source folder).
    """


@farm.command()
@click.option("--broker", envvar="MELT_FARM_BROKER", required=True, metavar="URL", help=BROKER_HELP)
@click.option("--device", "devices", multiple=True, required=True, metavar="NAME",
              help="A device attached to this host (repeat for more); its config is CONFIGS/NAME.yaml.")
@click.option("--configs", type=click.Path(file_okay=False, path_type=Path), default=Path("device_configs"),
              show_default=True, help="Folder of device configs.")
@click.option("--interval", type=click.FloatRange(0.5), default=5.0, show_default=True,
              help="Seconds between health probes of each device.")
@click.option("--visibility-timeout", type=click.FloatRange(60), default=None, metavar="S",
              help="Seconds a job's message stays reserved before Redis delivers it again "
                   "(keep it above the longest job; default 6 h).")
@click.option("--log-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write each device worker's Celery log to LOG_DIR/NAME.log.")
@click.option("--models", "models_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder of model files for path: models, found by their sha256 "
                   "(default ~/.cache/melt/farm/models).")
@click.option("--allow-source", "allowed_sources", multiple=True, metavar="SOURCE",
              help="A framework source this host may build besides the pinned one, exactly as an "
                   "experiment names it (repeat for more).")
def worker(broker: str, devices: tuple[str, ...], configs: Path, interval: float,
           visibility_timeout: float | None, log_dir: Path | None, models_dir: Path | None,
           allowed_sources: tuple[str, ...]) -> None:
    """Serve the devices attached to this host (--device) until stopped (Ctrl-C, SIGTERM).

    \b
    One Celery worker process per device consumes only that device's queue
    (device.NAME): one job at a time, acknowledged after it ends, given
    back to the queue if its process dies. Each device is probed every
    --interval seconds and advertised with its health; a device that stops
    answering stops taking jobs, and takes them again when it is back.

    \b
    Needs the farm key ($MELT_FARM_KEY, or the file `melt farm key new`
    writes): a message that is not signed with it, expired or already run
    is refused. This host builds only the pinned source and --allow-source
    ones, never a message's prebuilt binaries, and takes path: models from
    --models by sha256.
    """
    from melt.extras import require

    require("farm", "melt farm worker")
    from melt.config.loader import read_yaml, validate
    from melt.config.specs import DeviceSpec
    from melt.farm.app import VISIBILITY_TIMEOUT_S, ping, safe_url
    from melt.farm.supervisor import DeviceSlot, Supervisor
    from melt.errors import ConfigError
    from melt.farm.app import hide_password_in_title

    hide_password_in_title()
    slots = []
    for name in dict.fromkeys(devices):
        path = configs / f"{name}.yaml"
        if not path.is_file():
            raise ConfigError(str(path), [f"no config for device {name!r} in {configs}/"])
        spec = validate(DeviceSpec, read_yaml(path), str(path))
        if spec.name != name:
            raise ConfigError(str(path), [f"name: is {spec.name!r}, expected {name!r} (the file's name)"])
        slots.append(DeviceSlot(name, path.resolve(), spec))
    from melt.farm.signing import load_keys

    load_keys(broker)  # no key: one line saying how to set one
    ping(broker)
    console = stderr_console()

    def log(message: str) -> None:
        from rich.text import Text

        console.print(Text(message), soft_wrap=True)

    from melt.farm.policy import default_models_dir

    models = (models_dir or default_models_dir()).expanduser().resolve()
    models.mkdir(parents=True, exist_ok=True)
    sup = Supervisor(broker, slots, interval_s=interval,
                     visibility_timeout_s=visibility_timeout or VISIBILITY_TIMEOUT_S, log=log, log_dir=log_dir,
                     allowed_sources=tuple(dict.fromkeys(allowed_sources)), models_dir=models)
    signal.signal(signal.SIGTERM, lambda *_: sup.stop.set())
    log(f"serving {', '.join(s.name for s in slots)} to {safe_url(broker)}")
    try:
        sup.run()
    except KeyboardInterrupt:
        sup.stop.set()
    log("stopped")


@farm.command()
@click.option("--broker", envvar="MELT_FARM_BROKER", default=None, metavar="URL",
              help=BROKER_HELP[:-1] + "; default: the farm `melt farm up` started).")
@json_option
def status(broker: str | None, as_json: bool) -> None:
    """List the farm's devices: host, health, queued jobs, the job running now."""
    from rich.table import Table
    from rich.text import Text

    from melt.extras import require

    require("farm", "melt farm status")
    from melt.farm.app import hide_password_in_title, ping, redis_client
    from melt.farm.local import resolve_broker
    from melt.farm.registry import farm_status

    hide_password_in_title()
    broker = resolve_broker(broker)
    ping(broker)
    entries = farm_status(redis_client(broker))
    if as_json:
        echo_json([e.as_dict() for e in entries])
        return
    from rich.console import Console

    console = Console(highlight=False)
    if not entries:
        console.print("no devices are advertised and no device queue holds jobs")
        return
    table = Table("device", "host", "health", "queued", "running", "battery", "temp", "detail")
    for e in entries:
        running = f"{e.running['job_id']} (pid {e.running.get('pid')})" if e.running else "-"
        bat = e.info.get("battery_pct")
        temp = e.info.get("temp_c")
        table.add_row(Text(e.device), Text(e.host), Text(e.health), str(e.queued), Text(running),
                      f"{bat:.0f}%" if isinstance(bat, (int, float)) else "-",
                      f"{temp:.1f} °C" if isinstance(temp, (int, float)) else "-", Text(e.detail))
    console.print(table)


@farm.command()
@click.option("--local", "local", is_flag=True, default=True,
              help="On this machine (the only farm `up` starts; the flag may be left out).")
@click.option("--device", "devices", multiple=True, metavar="NAME",
              help="A device to serve (repeat for more); default: every config in --configs whose "
                   "virtual device runs now (melt virtual list).")
@click.option("--configs", type=click.Path(file_okay=False, path_type=Path), default=Path("device_configs"),
              show_default=True, help="Folder of device configs.")
@click.option("--models", "models_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The workers' folder of model files for path: models, found by their sha256 "
                   "(default ~/.cache/melt/farm/models).")
@click.option("--interval", type=click.FloatRange(0.5), default=5.0, show_default=True,
              help="Seconds between health probes of each device.")
@click.option("--wait", "wait_s", type=click.FloatRange(0), default=90.0, show_default=True,
              help="Seconds to wait for every device to be online (0: do not wait).")
def up(local: bool, devices: tuple[str, ...], configs: Path, models_dir: Path | None, interval: float,
       wait_s: float) -> None:
    """Start a farm on this machine: a private redis-server, the farm key, a worker per device.

    \b
    redis-server listens on 127.0.0.1 (a free port) with a random password;
    a farm key is written if this host has none (`melt farm key new`); one
    `melt farm worker` per device runs in the background. What was started
    is recorded in a private folder ($MELT_FARM_STATE_DIR or
    ~/.local/state/melt/farm-local, mode 700), where `melt run --farm`
    (no URL) and `melt farm status` find the broker. Already up: says so.

    \b
      melt virtual start android --abi host --detach
      melt farm up
      melt run experiments/quickstart-android.yaml --farm
      melt farm down
    """
    from melt.extras import require

    require("farm", "melt farm up")
    from melt.farm.local import state_dir, up as start_farm, wait_online, worker_alive

    farm, started = start_farm(list(devices), configs, models=models_dir, interval_s=interval,
                               log=lambda line: click.echo(line))
    folder = state_dir()
    if not started:
        alive = ", ".join(f"{w.device} (pid {w.pid}{'' if worker_alive(w) else ', exited'})"
                          for w in farm.workers)
        click.echo(f"the local farm is already up: broker {farm.safe_broker}, workers: {alive}; "
                   "`melt farm down` stops it")
        return
    health = wait_online(farm, wait_s) if wait_s else {}
    for w in farm.workers:
        click.echo(f"worker of {w.device} (pid {w.pid}): {health.get(w.device, 'starting')}, log {w.log}")
    late = [d for d, h in health.items() if h != "online"]
    if late:
        click.echo(f"not online yet: {', '.join(late)}; their jobs wait in their queues "
                   "(melt farm status shows when they are)")
    click.echo(f"the local farm is up: broker {farm.safe_broker}, farm key {farm.key_file}, "
               f"state in {folder}")
    click.echo("`melt run EXPERIMENT --farm` sends jobs to it; `melt farm down` stops it")


@farm.command()
@click.option("--timeout", "timeout_s", type=click.FloatRange(1), default=120.0, show_default=True,
              help="Seconds each worker has to end the job it runs before it is killed.")
def down(timeout_s: float) -> None:
    """Stop the farm `melt farm up` started: its workers (after the job in flight), then redis-server."""
    from melt.farm.local import down as stop_farm

    stopped = stop_farm(timeout_s=timeout_s, log=lambda line: click.echo(line, err=True))
    if not stopped:
        click.echo("the local farm is not up; nothing to stop")
    for line in stopped:
        click.echo(line)


@farm.group()
def key() -> None:
    """The farm key that signs job messages and results (not the broker password)."""


@key.command("new")
@click.option("--file", "path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to write it (default $MELT_FARM_KEY_FILE or ~/.config/melt/farm.key).")
@click.option("--rotate", is_flag=True,
              help="Keep the keys already in the file below the new one: they still verify, the new one signs.")
def key_new(path: Path | None, rotate: bool) -> None:
    """Write a new random farm key (mode 0600) and say where it is.

    \b
    Copy the file to the same place on every farm host (workers and the
    hosts that run `melt run --farm`), or give its first line to each as
    $MELT_FARM_KEY. To rotate: `melt farm key new --rotate`, copy the file
    everywhere, and after a week (the messages' lifetime) delete its old lines.
    """
    from melt.farm.signing import new_key_file

    written = new_key_file(path, rotate=rotate)
    click.echo(f"farm key written to {written}; copy it to every farm host (same path, mode 600)")

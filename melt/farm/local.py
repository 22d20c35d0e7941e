"""A farm on this machine in one command: ``melt farm up`` / ``melt farm down``.

``up`` starts Debian's ``redis-server`` on 127.0.0.1 (a free port, a random
password, no persistence), makes the farm key if this host has none, and
starts one ``melt farm worker`` per device: the devices named, or else every
device config whose virtual device runs now (``melt virtual start``). It
records what it started in a private folder (mode 0700; its files 0600):

- ``farm.json``: the broker URL (with its password), the pids of redis-server
  and of each worker, their logs. ``melt run --farm`` (no URL, or ``local``)
  and ``melt farm status`` read the broker from it;
- ``redis.conf``: the password is given to redis-server in this file, never
  on a command line;
- ``logs/``: ``worker-NAME.log`` (each worker's own lines) and ``NAME.log``
  (its device's Celery worker).

The folder is ``$MELT_FARM_STATE_DIR``, else ``$XDG_STATE_HOME/melt/farm-local``,
else ``~/.local/state/melt/farm-local``. ``down`` stops the workers (each
finishes the job it runs, up to a timeout), then redis-server, and removes
``farm.json`` and ``redis.conf``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from melt.farm.app import BROKER_ENV, FarmError, safe_url

STATE_ENV = "MELT_FARM_STATE_DIR"
STATE_FILE = "farm.json"
#: The largest state file read back (bytes): it is written by melt, but may have been replaced.
MAX_STATE_BYTES = 64 * 1024
#: What ``--farm`` and ``--broker`` take to mean the farm ``melt farm up`` started.
LOCAL = "local"


def state_dir() -> Path:
    """The local farm's private folder (see the module doc)."""
    env = os.environ.get(STATE_ENV)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(base) / "melt" / "farm-local"


@dataclass(frozen=True)
class WorkerProcess:
    """One ``melt farm worker`` the local farm started, serving one device."""

    device: str
    pid: int
    started: int  # its start time (clock ticks since boot): with the pid, this very process
    log: str


@dataclass(frozen=True)
class LocalFarm:
    """What ``melt farm up`` started, as ``farm.json`` holds it."""

    broker: str  # with its password: never print it, print :attr:`safe_broker`
    redis_pid: int
    redis_started: int  # clock ticks since boot
    port: int
    workers: tuple[WorkerProcess, ...]
    key_file: str  # where the farm key is read from ("$MELT_FARM_KEY" when from the environment)
    started_at: float  # unix time (s)

    @property
    def safe_broker(self) -> str:
        return safe_url(self.broker)

    @property
    def redis_alive(self) -> bool:
        return _runs(self.redis_pid, self.redis_started)


def _start_ticks(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot), None when it is gone or a zombie.

    With the pid it names one process: a pid reused later has another start time.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    if len(fields) < 20 or fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def _runs(pid: int, started: int) -> bool:
    """True while the process that started as ``pid`` at ``started`` runs."""
    return started > 0 and _start_ticks(pid) == started


def worker_alive(worker: WorkerProcess) -> bool:
    return _runs(worker.pid, worker.started)


def _private_dir(folder: Path) -> Path:
    if folder.is_symlink():
        raise FarmError(f"refused the local farm's folder {folder}: it is a symlink")
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(folder, 0o700)
    return folder


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def read_state(folder: Path | None = None) -> LocalFarm | None:
    """The local farm recorded in ``folder``, or None when none was started there.

    Raises :class:`FarmError` when the file is not one melt wrote.
    """
    path = (folder or state_dir()) / STATE_FILE
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_STATE_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise FarmError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        if len(raw) > MAX_STATE_BYTES:
            raise ValueError("too large")
        data = json.loads(raw)
        workers = tuple(WorkerProcess(str(w["device"]), int(w["pid"]), int(w["started"]), str(w["log"]))
                        for w in data["workers"])
        return LocalFarm(str(data["broker"]), int(data["redis_pid"]), int(data["redis_started"]),
                         int(data["port"]), workers, str(data["key_file"]), float(data["started_at"]))
    except (ValueError, KeyError, TypeError):
        raise FarmError(f"{path} is not a local farm's record: remove it (and stop what it started "
                        "by hand) or run `melt farm down`") from None


def local_broker(folder: Path | None = None) -> str:
    """The broker URL of the farm ``melt farm up`` started; :class:`FarmError` when it is not up."""
    farm = read_state(folder)
    if farm is None or not farm.redis_alive:
        raise FarmError("the local farm is not up: start it with `melt farm up`, or give a broker URL")
    return farm.broker


def resolve_broker(value: str | None, folder: Path | None = None) -> str:
    """``value`` as a broker URL: itself, or the local farm's when it is empty or ``local``."""
    return local_broker(folder) if not value or value == LOCAL else value


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def virtual_devices(configs: Path, virtual_state: Path | None = None) -> list[str]:
    """Names of the device configs in ``configs`` whose virtual device runs now.

    A config matches a running virtual device (``melt virtual list``) when it
    has a ``virtual:`` section and its address (``adb.connect``,
    ``ssh.host:ssh.port`` or ``ios.virtual``) is that device's.
    """
    from melt.config.loader import read_yaml, validate
    from melt.config.specs import DeviceSpec
    from melt.errors import MeltError
    from melt.virtual.registry import list_phones

    running = {r.address for r in list_phones(virtual_state)}
    names = []
    for path in sorted(Path(configs).glob("*.yaml")):
        try:
            spec = validate(DeviceSpec, read_yaml(path), str(path))
        except MeltError:
            continue
        address = spec.adb.connect if spec.adb else f"{spec.ssh.host}:{spec.ssh.port}" if spec.ssh else None
        if spec.ios is not None and spec.ios.virtual:
            address = spec.ios.virtual
        if spec.virtual is not None and address in running and spec.name == path.stem:
            names.append(spec.name)
    return names


def _check_configs(devices: list[str], configs: Path) -> None:
    from melt.config.loader import read_yaml, validate
    from melt.config.specs import DeviceSpec
    from melt.errors import ConfigError

    for name in devices:
        path = configs / f"{name}.yaml"
        if not path.is_file():
            raise ConfigError(str(path), [f"no config for device {name!r} in {configs}/"])
        if validate(DeviceSpec, read_yaml(path), str(path)).name != name:
            raise ConfigError(str(path), [f"name: expected {name!r} (the file's name)"])


def _farm_key(broker: str, log: Callable[[str], None]) -> str:
    """Where this host's farm key is; a new key file when there is none."""
    from melt.farm.signing import KEY_ENV, default_key_file, load_keys, new_key_file

    if not os.environ.get(KEY_ENV) and not default_key_file().exists():
        log(f"no farm key yet: wrote a new one to {new_key_file()} (mode 600)")
    return load_keys(broker).where


def _start_redis(folder: Path, port: int) -> tuple[int, int, str]:
    """Start redis-server on 127.0.0.1:``port``; its pid, start time and URL once it answers."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise FarmError("redis-server is not installed (Debian: apt-get install redis-server; "
                        "`make deps` installs it)")
    password = secrets.token_hex(24)
    conf = folder / "redis.conf"
    _write_private(conf, "\n".join([
        "bind 127.0.0.1", "protected-mode yes", f"port {port}", f"dir {folder}", 'save ""',
        "appendonly no", "daemonize no", "loglevel warning", f"logfile {folder / 'redis.log'}",
        f"requirepass {password}", ""]))
    proc = subprocess.Popen([binary, str(conf)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    started = _start_ticks(proc.pid) or 0
    url = f"redis://:{password}@127.0.0.1:{port}/0"
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=1)
    deadline = time.monotonic() + 15
    while True:
        try:
            client.ping()
            return proc.pid, started, url
        except redis.RedisError:
            if proc.poll() is not None or time.monotonic() > deadline:
                _stop_pid(proc.pid, started, 5)
                raise FarmError(f"redis-server did not start on 127.0.0.1:{port} "
                                f"(see {folder / 'redis.log'})") from None
            time.sleep(0.05)


def _start_worker(name: str, broker: str, configs: Path, logs: Path, models: Path | None,
                  interval_s: float) -> WorkerProcess:
    log = logs / f"worker-{name}.log"
    argv = [sys.executable, "-m", "melt.cli.main", "farm", "worker", "--device", name,
            "--configs", str(configs), "--log-dir", str(logs), "--interval", str(interval_s)]
    if models is not None:
        argv += ["--models", str(models)]
    env = {**os.environ, BROKER_ENV: broker, "PYTHONUNBUFFERED": "1"}  # the URL never on a command line
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                start_new_session=True)
    return WorkerProcess(name, proc.pid, _start_ticks(proc.pid) or 0, str(log))


def _last_line(path: str) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - 4096))
            lines = f.read().decode("utf-8", "replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


def wait_online(farm: LocalFarm, timeout_s: float) -> dict[str, str]:
    """Each worker's device health once all are online and consuming, or when ``timeout_s`` passed.

    Raises :class:`FarmError` when a worker exits (with the last line of its log).
    """
    from melt.farm.app import redis_client
    from melt.farm.registry import farm_status

    client = redis_client(farm.broker)
    deadline = time.monotonic() + timeout_s
    while True:
        for w in farm.workers:
            if not worker_alive(w):
                raise FarmError(f"the worker of {w.device} exited: {_last_line(w.log) or 'see ' + w.log} "
                                "(`melt farm down` stops the rest)")
        entries = {e.device: e for e in farm_status(client)}
        health = {w.device: entries[w.device].health if w.device in entries else "starting"
                  for w in farm.workers}
        ready = all(w.device in entries and entries[w.device].health == "online"
                    and entries[w.device].info.get("consuming") for w in farm.workers)
        if ready or time.monotonic() > deadline:
            return health
        time.sleep(0.2)


def up(devices: list[str], configs: Path, *, folder: Path | None = None, models: Path | None = None,
       interval_s: float = 5.0, log: Callable[[str], None] = lambda _: None) -> tuple[LocalFarm, bool]:
    """Start the local farm (see the module doc); ``(farm, False)`` when it was already up.

    ``devices`` empty: every config in ``configs`` whose virtual device runs.
    Raises :class:`FarmError` (or :class:`~melt.errors.ConfigError`).
    """
    folder = _private_dir(folder or state_dir())
    current = read_state(folder)
    if current is not None:
        if current.redis_alive:
            return current, False
        down(folder)  # what is left of a farm whose broker died
    configs = Path(configs).resolve()
    names = list(dict.fromkeys(devices)) or virtual_devices(configs)
    if not names:
        raise FarmError(f"no device to serve: no virtual device of {configs}/ runs "
                        "(`melt virtual start android --detach`) and no --device was given")
    _check_configs(names, configs)
    logs = folder / "logs"
    logs.mkdir(exist_ok=True, mode=0o700)
    port = _free_port()
    redis_pid, redis_started, broker = _start_redis(folder, port)
    workers: list[WorkerProcess] = []
    try:
        key_file = _farm_key(broker, log)
        for name in names:
            workers.append(_start_worker(name, broker, configs, logs, models and Path(models).resolve(),
                                         interval_s))
    except BaseException:
        for w in workers:
            _stop_pid(w.pid, w.started, 10)
        _stop_pid(redis_pid, redis_started, 5)
        raise
    log(f"redis-server listens on 127.0.0.1:{port} (pid {redis_pid})")
    farm = LocalFarm(broker, redis_pid, redis_started, port, tuple(workers), key_file, time.time())
    _write_private(folder / STATE_FILE, json.dumps(asdict(farm), indent=2) + "\n")
    return farm, True


def _terminate(pid: int, started: int) -> bool:
    """SIGTERM ``pid`` if it still is the process meant; True when it was running."""
    if not _runs(pid, started):
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    return True


def _stop_pid(pid: int, started: int, timeout_s: float, *, signalled: bool = False) -> bool:
    """SIGTERM ``pid`` (unless ``signalled``), SIGKILL its process group after ``timeout_s``.

    True when it was running.
    """
    if not signalled and not _terminate(pid, started):
        return False
    deadline = time.monotonic() + timeout_s
    while _runs(pid, started) and time.monotonic() < deadline:
        _reap(pid)
        time.sleep(0.05)
    if _runs(pid, started):
        try:
            os.killpg(pid, signal.SIGKILL)  # started as its own session: its children go too
        except (ProcessLookupError, PermissionError):
            pass
    _reap(pid)
    return True


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)  # a child of this process (up, then down in one process)
    except ChildProcessError:
        pass


def down(folder: Path | None = None, *, timeout_s: float = 120.0,
         log: Callable[[str], None] = lambda _: None) -> list[str]:
    """Stop what ``up`` started: workers first (each ends its job), then redis-server.

    Returns one line per process stopped (empty when nothing was up).
    """
    folder = folder or state_dir()
    farm = read_state(folder)
    if farm is None:
        return []
    stopped = []
    # each stops its device's Celery worker once the job in flight has ended
    running = [w for w in farm.workers if _terminate(w.pid, w.started)]
    for w in running:
        log(f"stopping the worker of {w.device} (pid {w.pid})")
    deadline = time.monotonic() + timeout_s
    for w in running:
        _stop_pid(w.pid, w.started, max(1.0, deadline - time.monotonic()), signalled=True)
        stopped.append(f"stopped the worker of {w.device} (pid {w.pid})")
    if _stop_pid(farm.redis_pid, farm.redis_started, 10):
        stopped.append(f"stopped redis-server on 127.0.0.1:{farm.port} (pid {farm.redis_pid})")
    for name in (STATE_FILE, "redis.conf"):
        (folder / name).unlink(missing_ok=True)
    return stopped

"""The virtual iPhone itself: apps, their containers, their processes, heat and energy impact.

:class:`IphoneDevice` implements :class:`melt.transports.ios.IosServices` in
this process; :mod:`melt.virtual.iphone` serves it on loopback for ``melt
run`` in another process. It keeps what makes a phone hard:

- an app must be installed (its Info.plist names the bundle id) before it
  launches; its files live in its container's ``Documents``, reached without
  following a symlink (:mod:`melt.virtual.confined`);
- a launched app is a process of its own (:mod:`melt.virtual.iphone_app`,
  which runs this machine's real llama-bench or llama-completion under the
  app contract) that writes its own files and exits on its own; launching
  again kills the running instance, as DVT's launch does;
- it can be locked (no launch) and, from iOS 17, DVT calls (launch, process
  list, samples) need the host's RemoteXPC tunnel;
- it reports a thermal state (nominal, fair, serious, critical) that rises
  with the CPU its apps use and falls as it cools, and an energy-impact score
  per process (a unitless number following that process's CPU use).

Everything it reports is simulated (``simulated: true`` in its device info).
Controls (files in ``control/``, taken each tick): ``lock`` on|off,
``tunnel`` on|off, ``thermal`` a state name or a heat value, ``uninstall``
a bundle id.
"""

from __future__ import annotations

import contextlib
import os
import plistlib
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from melt.errors import DeviceUnavailableError, TransportError
from melt.transports.ios import AppNotInstalled, DeviceLocked, TunnelMissing, TUNNEL_HINT, needs_tunnel
from melt.virtual import confined
from melt.virtual.iphone_config import THERMAL_STATES, VirtualIphoneConfig
from melt.virtual.proctree import cpu_ticks, descendants, kill_tree

CLK_TCK = os.sysconf("SC_CLK_TCK")
#: the largest file an app may hand out through ``pull`` (bytes)
MAX_FILE = 4 * 1024**3


class IphoneDevice:
    """One virtual iPhone whose storage is ``root`` (see the module doc)."""

    def __init__(self, config: VirtualIphoneConfig, root: Path, *, tools: Mapping[str, Path] | None = None):
        self.config = config
        self.root = Path(root)
        (self.root / "containers").mkdir(parents=True, exist_ok=True)
        (self.root / "control").mkdir(parents=True, exist_ok=True)
        self._tools = dict(tools) if tools is not None else None
        self._lock = threading.RLock()
        self.locked = config.locked
        self.tunnel = config.tunnel
        self.heat = 0.0  # the model's temperature rise over ambient (K)
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self._ticks: dict[int, tuple[float, int]] = {}  # pid -> (time, CPU ticks) at the last tick
        self._impact: dict[int, float] = {}
        self._sampled: dict[int, tuple[float, int]] = {}  # pid -> (time, CPU ticks) at its last sample
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        for bundle_id in config.preinstalled:
            self._register(bundle_id)

    # ------------------------------------------------------------- life
    def start(self) -> None:
        """Start the device's clock (heat, energy impact, controls)."""
        self._write_thermal()
        self._thread = threading.Thread(target=self._run, name="iphone-model", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the clock and every app process."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        for pid in list(self.procs):
            self.kill(self.config.udid, pid)

    @property
    def thermal_state(self) -> str:
        """nominal, fair, serious or critical, by the current heat."""
        t = self.config.thermal
        levels = [t.fair_k, t.serious_k, t.critical_k]
        return THERMAL_STATES[sum(self.heat >= x for x in levels)]

    def _run(self) -> None:
        period = 1.0 / self.config.tick_hz
        last = time.monotonic()
        while not self._stop.wait(period):
            now = time.monotonic()
            self.tick(now - last)
            last = now

    def tick(self, dt: float) -> None:
        """Advance the model by ``dt`` seconds: apps' CPU -> heat and energy impact; controls."""
        self._controls()
        busy_total = 0.0
        with self._lock:
            for pid, proc in list(self.procs.items()):
                if proc.poll() is not None:
                    for book in (self._ticks, self._sampled, self._impact):
                        book.pop(pid, None)
                    continue
                busy_total += self._busy_cores(pid, self._ticks) or 0.0
            t = self.config.thermal
            self.heat = max(0.0, self.heat + dt * (t.heat_per_core_k_s * busy_total - self.heat / t.cool_tau_s))
        self._write_thermal()

    def _busy_cores(self, pid: int, book: dict[int, tuple[float, int]]) -> float | None:
        """Busy cores of app ``pid`` (its process tree) since ``book`` last saw it (None: too soon)."""
        now = time.monotonic()
        ticks = cpu_ticks(pid) + sum(cpu_ticks(c) for c in descendants(pid))
        t0, before = book.get(pid, (now, ticks))
        if now - t0 < 0.02:
            return None
        book[pid] = (now, ticks)
        return (ticks - before) / CLK_TCK / (now - t0)

    def _write_thermal(self) -> None:
        path = self.root / "thermal_state"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(self.thermal_state + "\n")
        os.replace(tmp, path)

    def _controls(self) -> None:
        folder = self.root / "control"
        for name in ("lock", "tunnel", "thermal", "uninstall"):
            path = folder / name
            try:
                value = path.read_text().strip()
            except OSError:
                continue
            path.unlink(missing_ok=True)
            self.control(name, value)

    def control(self, name: str, value: str) -> None:
        """Apply one control (see the module doc); unknown values are ignored."""
        with self._lock:
            if name == "lock" and value in ("on", "off"):
                self.locked = value == "on"
            elif name == "tunnel" and value in ("on", "off"):
                self.tunnel = value == "on"
            elif name == "thermal":
                t = self.config.thermal
                by_state = {"nominal": 0.0, "fair": t.fair_k, "serious": t.serious_k, "critical": t.critical_k}
                with contextlib.suppress(ValueError):
                    self.heat = by_state[value] + 0.5 if value in by_state and value != "nominal" else (
                        0.0 if value == "nominal" else max(0.0, float(value)))
                self._write_thermal()
            elif name == "uninstall":
                self.uninstall(value)

    # ------------------------------------------------------------- IosServices
    def _check(self, udid: str) -> None:
        if udid != self.config.udid:
            raise DeviceUnavailableError(f"no iPhone {udid} attached")

    def _dvt(self) -> None:
        if needs_tunnel(self.config.ios_version) and not self.tunnel:
            raise TunnelMissing(f"iOS {self.config.ios_version} reaches DVT only through a RemoteXPC "
                                f"tunnel and none is up for {self.config.udid}: {TUNNEL_HINT}")

    def _documents(self, bundle_id: str) -> Path:
        if not self.app_installed(self.config.udid, bundle_id):
            raise AppNotInstalled(f"app {bundle_id} is not installed on {self.config.name}")
        return self.root / "containers" / bundle_id / "Documents"

    def _register(self, bundle_id: str) -> None:
        if not bundle_id or "/" in bundle_id or bundle_id.startswith("."):
            raise TransportError(f"not a bundle id: {bundle_id!r}")
        (self.root / "containers" / bundle_id / "Documents").mkdir(parents=True, exist_ok=True)
        (self.root / "containers" / bundle_id / ".installed").write_text("")

    def list_devices(self) -> list[dict[str, Any]]:
        return [self.device_info(self.config.udid)]

    def device_info(self, udid: str) -> dict[str, Any]:
        self._check(udid)
        c = self.config
        return {"udid": c.udid, "name": c.name, "product_type": c.product_type, "ios_version": c.ios_version,
                "build": c.build, "simulated": True}

    def install(self, udid: str, app: Path) -> None:
        """Install the bundle ``app`` (a folder with Info.plist, or the Info.plist itself)."""
        self._check(udid)
        plist = Path(app) / "Info.plist" if Path(app).is_dir() else Path(app)
        try:
            info = plistlib.loads(plist.read_bytes())
            bundle_id = str(info["CFBundleIdentifier"])
        except (OSError, KeyError, ValueError, plistlib.InvalidFileException) as exc:
            raise TransportError(f"not an app bundle (no readable Info.plist): {exc}") from None
        self._register(bundle_id)

    def uninstall(self, bundle_id: str) -> None:
        """Remove an app and its container, as deleting it from the home screen does."""
        import shutil

        if bundle_id and "/" not in bundle_id and not bundle_id.startswith("."):
            shutil.rmtree(self.root / "containers" / bundle_id, ignore_errors=True)

    def app_installed(self, udid: str, bundle_id: str) -> bool:
        self._check(udid)
        if not bundle_id or "/" in bundle_id or bundle_id.startswith("."):
            return False
        return (self.root / "containers" / bundle_id / ".installed").is_file()

    def tools(self) -> dict[str, Path]:
        """The programs the app runs: this machine's cached llama.cpp host build."""
        if self._tools is None:
            from melt.frameworks.llamacpp.build import host_build

            build = host_build(targets=["llama-bench", "llama-completion"])
            self._tools = {n: Path(build.binaries[n]) for n in ("llama-bench", "llama-completion")}
        return self._tools

    def launch(self, udid: str, bundle_id: str, args: Sequence[str], env: Mapping[str, str]) -> int:
        self._check(udid)
        docs = self._documents(bundle_id)
        self._dvt()
        if self.locked:
            raise DeviceLocked(f"{self.config.name} is locked: unlock it to launch {bundle_id}")
        tools = self.tools()
        with self._lock:
            for pid in list(self.procs):  # one instance of an app, as DVT's launch kills the old one
                self.kill(udid, pid)
            app_env = {"HOME": str(docs.parent), "PATH": "/usr/bin:/bin", "PYTHONPATH": _package_root(),
                       **{k: str(v) for k, v in env.items() if k.isidentifier()},
                       "MELT_VIRTUAL_THERMAL_FILE": str(self.root / "thermal_state"),
                       "MELT_VIRTUAL_TOOLS": os.pathsep.join(f"{k}={v}" for k, v in tools.items())}
            proc = subprocess.Popen([sys.executable, "-m", "melt.virtual.iphone_app", *map(str, args)],
                                    cwd=docs, env=app_env, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            self.procs[proc.pid] = proc
            self._ticks[proc.pid] = self._sampled[proc.pid] = (time.monotonic(), 0)  # no CPU used yet
            return proc.pid

    def is_running(self, udid: str, pid: int) -> bool:
        self._check(udid)
        self._dvt()
        proc = self.procs.get(pid)
        return proc is not None and proc.poll() is None

    def kill(self, udid: str, pid: int) -> None:
        self._check(udid)
        proc = self.procs.get(pid)
        if proc is not None and proc.poll() is None:
            kill_tree(pid)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()

    def push(self, udid: str, bundle_id: str, local: Path, remote: str) -> None:
        """Move the received file ``local`` into the container at ``remote`` (no symlink followed)."""
        self._check(udid)
        docs = self._documents(bundle_id)
        parent, _, name = remote.rpartition("/")
        try:
            with confined.open_dir(docs, parent, create=True) as fd:
                _check_name(name)
                tmp = f".{name}.{os.getpid()}.part"
                with open(local, "rb") as src, open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC
                                                          | os.O_NOFOLLOW, 0o644, dir_fd=fd), "wb") as dst:
                    while chunk := src.read(1 << 20):
                        dst.write(chunk)
                os.replace(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)
        except OSError as exc:
            raise TransportError(f"cannot write {remote} into the app's Documents: {exc.strerror or exc}") from None

    def open_file(self, bundle_id: str, remote: str) -> tuple[Any, int]:
        """An open binary file of the container and its size (no symlink followed)."""
        docs = self._documents(bundle_id)
        parent, _, name = remote.rpartition("/")
        try:
            with confined.open_dir(docs, parent) as fd:
                _check_name(name)
                f = os.fdopen(os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=fd), "rb")
        except OSError as exc:
            raise TransportError(f"no such file in the app's Documents: {remote} ({exc.strerror or exc})") from None
        info = os.fstat(f.fileno())
        size = info.st_size
        if not stat.S_ISREG(info.st_mode) or size > MAX_FILE:
            f.close()
            raise TransportError(f"not a file melt can pull: {remote}")
        return f, size

    def pull(self, udid: str, bundle_id: str, remote: str, local: Path) -> None:
        self._check(udid)
        f, _ = self.open_file(bundle_id, remote)
        with f, open(local, "wb") as out:
            while chunk := f.read(1 << 20):
                out.write(chunk)

    def exists(self, udid: str, bundle_id: str, remote: str) -> bool:
        self._check(udid)
        docs = self._documents(bundle_id)
        parent, _, name = remote.rpartition("/")
        try:
            with confined.open_dir(docs, parent) as fd:
                _check_name(name)
                os.stat(name, dir_fd=fd, follow_symlinks=False)
            return True
        except OSError:
            return False

    def process_sample(self, udid: str, pid: int) -> dict[str, Any] | None:
        self._check(udid)
        self._dvt()
        with self._lock:
            proc = self.procs.get(pid)
            if proc is None or proc.poll() is not None:
                return None
            cores = self._busy_cores(pid, self._sampled)  # over the time since the last sample
            if cores is not None:
                e = self.config.energy
                self._impact[pid] = round(e.overhead + e.per_core * cores, 3)
            impact = self._impact.get(pid)
        return None if impact is None else {"energy_impact": impact}


def _package_root() -> str:
    import melt

    return str(Path(melt.__file__).resolve().parent.parent)


def _check_name(name: str) -> None:
    if name in ("", ".", "..") or "/" in name:
        raise OSError(f"not a file name: {name!r}")

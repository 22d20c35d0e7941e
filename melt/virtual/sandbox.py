"""The per-phone folder that the phone's commands see as an Android device.

Layout of ``root`` (a host folder) and where each part appears on the device::

    root/data                       -> /data   (/data/local/tmp, /data/melt-virtual)
    root/data/media/0               -> /sdcard and /storage/emulated/0
    root/system                     -> /system (/system/bin: getprop, dumpsys ...)
    root/sys/class/power_supply     -> /sys/class/power_supply (battery/, usb/)
    root/sys/bus                    -> /sys/bus (iio/devices: ODPM energy counters, when enabled)
    root/sys/class/thermal          -> /sys/class/thermal (thermal_zone*/)
    root/sys/devices/system/cpu     -> /sys/devices/system/cpu (cpu*/cpufreq/)

Commands run under bubblewrap in a private mount namespace: a fresh root
holding read-only binds of the host's top-level folders, the real ``/proc``,
``/dev`` and ``/tmp``, and the folders above bound over their device paths.
Host binaries pushed to ``/data/local/tmp`` run as they are. The host's PID
namespace is kept, so ``kill`` and ``/proc/PID`` work across ``adb shell``
sessions.

The userland is Android's: ``/system/bin/sh`` is mksh (the MirBSD Korn shell
Android ships), the usual commands are toybox applets linked in
``/system/bin`` with ``awk`` (Android's is one-true-awk; the host's stands in),
and nothing else is on ``PATH`` (no bash, no GNU tools), so
what melt sends to a phone runs in the shell a phone has.

Without a working ``bwrap`` the phone's commands (charging and governor
writes, ``rm -rf`` of a work folder) would run directly on the host, so the
phone refuses to start unless the user allows it explicitly
(``MELT_VIRTUAL_UNISOLATED=1``, ``melt virtual start android --unisolated``);
then only the sync service maps device paths (see :attr:`Sandbox.isolation`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Sequence

from melt.errors import MeltError
from melt.virtual.android_tools import STATE, install_tools
from melt.virtual.emulation import Emulation, native

#: device path -> folder under the sandbox root, longest prefix first
MOUNTS: tuple[tuple[str, str], ...] = (
    ("/sys/devices/system/cpu", "sys/devices/system/cpu"),
    ("/sys/class/power_supply", "sys/class/power_supply"),
    ("/sys/class/thermal", "sys/class/thermal"),
    ("/sys/bus", "sys/bus"),
    ("/storage/emulated/0", "data/media/0"),
    ("/sdcard", "data/media/0"),
    ("/system", "system"),
    ("/vendor", "vendor"),
    ("/data", "data"),
)
#: device paths a file may be pushed to (the rest of the device is read-only)
WRITABLE = ("/data", "/sdcard", "/storage/emulated/0", "/tmp")
#: host top-level entries never bound into the device (replaced or private)
_NOT_BOUND = {"proc", "dev", "sys", "tmp", "data", "system", "vendor", "sdcard", "storage"}

#: PATH of a device shell: Android's folders only (mksh and toybox applets live there)
DEVICE_PATH = "/system/bin:/system/xbin"
#: environment variable that lets a phone run without bubblewrap (commands then run on the host)
UNISOLATED_ENV = "MELT_VIRTUAL_UNISOLATED"


class IsolationError(MeltError):
    """bubblewrap cannot isolate the phone's commands and running without it was not allowed."""


def unisolated_allowed() -> bool:
    """True when the user allowed a phone without isolation (``MELT_VIRTUAL_UNISOLATED=1``)."""
    return os.environ.get(UNISOLATED_ENV, "").strip().lower() in ("1", "true", "yes")


def atomic_write(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so readers never see a partial value."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class Sandbox:
    """A virtual phone's file tree and the way its commands are run.

    Subclasses (the virtual Jetson's) change the layout through the class
    attributes: ``mounts`` (device path -> folder under the root),
    ``read_only`` (device paths bound read-only) and ``not_bound`` (host
    top-level entries replaced or kept private).
    """

    mounts: tuple[tuple[str, str], ...] = MOUNTS
    read_only: tuple[str, ...] = ("/system", "/vendor")
    not_bound: frozenset[str] = frozenset(_NOT_BOUND)
    host_tmp = True  # bind the host's /tmp (the phone's adb pushes may land there)

    def __init__(self, root: Path, *, cpu_count: int | None = None, serial: str = ""):
        self.root = Path(root)
        self.serial = serial  # marks every process the phone runs (see marker)
        self.cpu_count = cpu_count or os.cpu_count() or 1
        self.isolation = "none"
        self.probe_error = ""
        self.emulation: Emulation = native()  # how the phone's ABI runs here (set at start)

    # ---------------------------------------------------------------- layout
    def host_path(self, device_path: str) -> Path:
        """The host path behind ``device_path`` (absolute, normalised)."""
        path = os.path.normpath("/" + device_path.lstrip("/"))
        for prefix, sub in self.mounts:
            if path == prefix or path.startswith(prefix + "/"):
                return self.root / sub / path[len(prefix):].lstrip("/")
        return Path(path)

    @staticmethod
    def is_writable(device_path: str) -> bool:
        """True where the device lets files be created (``/data``, ``/sdcard``, ``/tmp``)."""
        path = os.path.normpath("/" + device_path.lstrip("/"))
        return any(path == w or path.startswith(w + "/") for w in WRITABLE)

    def state_path(self, *parts: str) -> Path:
        """Host path of a file under the device's ``/data/melt-virtual``."""
        return self.host_path(STATE).joinpath(*parts)

    def create(self, props: dict[str, str]) -> None:
        """Create (or refresh, after a restart) the layout; files in /data are kept."""
        for sub in ("data/local/tmp", "data/media/0", "vendor", "system/xbin"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        for sub in ("settings/system", "settings/global", "settings/secure", "state", "control"):
            self.state_path(sub).mkdir(parents=True, exist_ok=True)
        install_tools(self.root / "system/bin")
        self.write_props(props)
        defaults = {
            "settings/system/screen_brightness": "128",
            "settings/system/screen_off_timeout": "60000",
            "settings/global/stay_on_while_plugged_in": "0",
            "state/screen": "on",
        }
        for rel, value in defaults.items():
            path = self.state_path(rel)
            if not path.exists():
                atomic_write(path, value + "\n")
        # a restart is a reboot: "dumpsys battery unplug" and control files do not survive it
        shutil.rmtree(self.state_path("state/battery"), ignore_errors=True)
        for ctl in self.state_path("control").iterdir():
            ctl.unlink()
        self._create_sysfs()

    def write_props(self, props: dict[str, str]) -> None:
        """The props ``getprop`` answers (also ``/system/build.prop``)."""
        text = "".join(f"{k}={v}\n" for k, v in sorted(props.items()))
        atomic_write(self.state_path("props"), text)
        atomic_write(self.root / "system/build.prop", text)

    def _create_sysfs(self) -> None:
        ps = self.root / "sys/class/power_supply"
        (ps / "battery").mkdir(parents=True, exist_ok=True)
        (ps / "usb").mkdir(parents=True, exist_ok=True)
        (self.root / "sys/class/thermal").mkdir(parents=True, exist_ok=True)
        for name, value in (("type", "Battery"), ("present", "1"), ("health", "Good"),
                            ("technology", "Li-ion"), ("scope", "System")):
            atomic_write(ps / "battery" / name, value + "\n")
        (self.root / "sys/bus/iio/devices").mkdir(parents=True, exist_ok=True)
        atomic_write(ps / "usb/type", "USB\n")
        cpu = self.root / "sys/devices/system/cpu"
        cpu.mkdir(parents=True, exist_ok=True)
        real = Path("/sys/devices/system/cpu")
        for name in ("online", "possible", "present", "offline", "kernel_max"):
            value = _read(real / name)
            atomic_write(cpu / name, value if value is not None else f"0-{self.cpu_count - 1}\n")
        for n in range(self.cpu_count):
            (cpu / f"cpu{n}/cpufreq").mkdir(parents=True, exist_ok=True)
            topo_src, topo = real / f"cpu{n}/topology", cpu / f"cpu{n}/topology"
            topo.mkdir(exist_ok=True)
            if topo_src.is_dir():
                for f in topo_src.iterdir():
                    value = _read(f)
                    if value is not None:
                        atomic_write(topo / f.name, value)
            atomic_write(cpu / f"cpu{n}/online", "1\n")

    def thermal_zone_dir(self, index: int) -> Path:
        path = self.root / f"sys/class/thermal/thermal_zone{index}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    # ---------------------------------------------------------------- running
    def probe(self) -> str:
        """Check that bubblewrap works here; sets and returns :attr:`isolation`.

        ``self.probe_error`` says why when it does not.
        """
        self.isolation = "none"
        self.probe_error = "bwrap is not installed (Debian package bubblewrap)"
        if shutil.which("bwrap"):
            try:
                done = subprocess.run(
                    self.wrap(["/system/bin/sh", "-c",
                               "test -d /data/local/tmp && test -x /system/bin/getprop"], force=True),
                    capture_output=True, timeout=20,
                )
                if done.returncode == 0:
                    self.isolation = "bwrap"
                    self.probe_error = ""
                else:
                    reason = done.stderr.decode(errors="replace").strip().splitlines()
                    self.probe_error = f"bwrap failed: {reason[-1] if reason else f'exit {done.returncode}'}"
            except (OSError, subprocess.TimeoutExpired) as exc:
                self.probe_error = f"bwrap failed: {exc}"
        return self.isolation

    def require_isolation(self, allow_unisolated: bool = False) -> str:
        """Probe; raise :class:`IsolationError` unless bwrap works or running without it is allowed."""
        if self.probe() == "bwrap" or allow_unisolated or unisolated_allowed():
            return self.isolation
        raise IsolationError(
            f"{self.probe_error}; without it the phone's commands would run on this host "
            f"as {os.environ.get('USER') or 'this user'} (charging writes, rm -rf of work folders). "
            f"Set {UNISOLATED_ENV}=1 or pass --unisolated to run it anyway."
        )

    def shell_argv(self, command: str) -> list[str]:
        """Host argv of ``sh -c COMMAND`` (or an interactive shell) on the device."""
        sh = "/system/bin/sh" if self.isolation == "bwrap" else str(self.root / "system/bin/sh")
        return self.wrap([sh, "-c", command] if command else [sh, "-i"])

    def wrap(self, argv: Sequence[str], *, force: bool = False) -> list[str]:
        """The host argv that runs ``argv`` inside the device's file layout."""
        if self.isolation != "bwrap" and not force:
            return self.emulation.prefix(argv)
        # found on the host's PATH: the device environment's PATH has no bwrap
        args = [shutil.which("bwrap") or "bwrap", "--die-with-parent"]
        for entry in sorted(os.listdir("/")):
            if entry in self.not_bound:
                continue
            host = "/" + entry
            if os.path.islink(host):
                args += ["--symlink", os.readlink(host), host]
            elif os.path.isdir(host) or os.path.isfile(host):
                args += ["--ro-bind", host, host]
        args += ["--dev-bind", "/dev", "/dev", "--proc", "/proc"]
        if self.host_tmp:
            args += ["--bind", "/tmp", "/tmp"]
        if not any(device == "/sys" for device, _ in self.mounts):
            args += ["--ro-bind", "/sys", "/sys"]
        for device, sub in reversed(self.mounts):
            host = str(self.root / sub)
            if device in self.read_only:
                args += ["--ro-bind", host, device]
            else:
                args += ["--bind", host, device]
        args += ["--chdir", "/", "--"]
        return self.emulation.prefix(args + list(argv))

    def environment(self, term: str | None = None) -> dict[str, str]:
        """Environment of a device shell (Android's names; host's locale)."""
        env = {
            "PATH": DEVICE_PATH,
            "HOME": "/",
            "TMPDIR": "/data/local/tmp",
            "ANDROID_DATA": "/data",
            "ANDROID_ROOT": "/system",
            "EXTERNAL_STORAGE": "/sdcard",
            "SHELL": "/system/bin/sh",
            "USER": "shell",
            "HOSTNAME": "localhost",
            "LANG": os.environ.get("LANG", "C.UTF-8"),
        }
        if self.serial:
            env["MELT_VIRTUAL_SERIAL"] = self.serial
        if self.isolation != "bwrap":
            env["PATH"] = f"{self.root / 'system/bin'}:{self.root / 'system/xbin'}"
        if term:
            env["TERM"] = term
        return env

    @property
    def marker(self) -> str:
        """The environment entry every process of this phone carries."""
        return f"MELT_VIRTUAL_SERIAL={self.serial}"

    def host_cwd(self) -> str:
        """Working directory of the wrapped process on the host side."""
        return "/" if self.isolation == "bwrap" else str(self.root / "data/local/tmp")


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None

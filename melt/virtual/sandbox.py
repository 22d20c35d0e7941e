"""The per-phone folder that the phone's commands see as an Android device.

Layout of ``root`` (a host folder) and where each part appears on the device::

    root/data                       -> /data   (/data/local/tmp, /data/melt-virtual)
    root/data/media/0               -> /sdcard and /storage/emulated/0
    root/system                     -> /system (/system/bin: getprop, dumpsys ...)
    root/sys/class/power_supply     -> /sys/class/power_supply (battery/, usb/)
    root/sys/bus                    -> /sys/bus (iio/devices: ODPM energy counters, when enabled)
    root/sys/class/thermal          -> /sys/class/thermal (thermal_zone*/)
    root/sys/devices/system/cpu     -> /sys/devices/system/cpu (cpu*/cpufreq/)
    root/tmp                        -> /tmp    (the phone's own)

``/sdcard`` and ``/storage/emulated/0`` are symlinks to ``/data/media/0``
inside the sandbox, as on Android.

Commands run under bubblewrap: a fresh root holding read-only binds of the
host folders programs need to run (:data:`HOST_FOLDERS`, a few files of
``/etc``), a minimal ``/dev``, and the folders above bound over their device
paths; nothing else of the host (no home folders, no host ``/tmp``). Host
binaries pushed to ``/data/local/tmp`` run as they are. The phone has one
PID and IPC namespace of its own, held by a small init process
(:meth:`Sandbox.start_init`) that every ``adb shell`` joins, so ``kill``,
``pidof`` and ``/proc/PID`` work across sessions while the host's processes
stay out of sight. The network is the host's: ``adb forward`` reaches a
phone's server on the host loopback (see :mod:`melt.virtual.services_tcp`).

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

import contextlib
import fcntl
import json
import logging
import os
import select
import shutil
import stat as st
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Sequence

from melt.errors import MeltError
from melt.virtual import confined
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
    ("/tmp", "tmp"),
)
#: device paths a file may be pushed to (the rest of the device is read-only)
WRITABLE = ("/data", "/sdcard", "/storage/emulated/0", "/tmp")
#: host top-level folders a device sees, read-only: what its programs need to run
HOST_FOLDERS = ("bin", "lib", "lib32", "lib64", "libx32", "sbin", "usr")
#: entries of the host's /etc a device sees, read-only (no shadow, no host keys)
HOST_ETC = ("alternatives", "group", "hosts", "ld.so.cache", "ld.so.conf", "ld.so.conf.d",
            "localtime", "mkshrc", "nsswitch.conf", "passwd", "resolv.conf")
#: ioctl on a namespace fd that answers the user namespace owning it (linux/nsfs.h)
NS_GET_USERNS = 0xB701

log = logging.getLogger(__name__)

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
    ``read_only`` (device paths bound read-only), ``host_etc`` (entries of
    the host's ``/etc`` shown) and ``private_pids`` (whether commands get a
    PID namespace of their own when no init holds one).
    """

    mounts: tuple[tuple[str, str], ...] = MOUNTS
    read_only: tuple[str, ...] = ("/system", "/vendor")
    host_etc: tuple[str, ...] = HOST_ETC
    private_pids = True

    def __init__(self, root: Path, *, cpu_count: int | None = None, serial: str = ""):
        self.root = Path(root)
        self.serial = serial  # marks every process the phone runs (see marker)
        self.cpu_count = cpu_count or os.cpu_count() or 1
        self.isolation = "none"
        self.probe_error = ""
        self.emulation: Emulation = native()  # how the phone's ABI runs here (set at start)
        self._init: _Init | None = None

    # ---------------------------------------------------------------- layout
    def host_path(self, device_path: str) -> Path:
        """The host path behind ``device_path`` (absolute, normalised; lexical, for trusted callers)."""
        rel = self.locate(device_path)
        return self.root / rel if rel is not None else Path(os.path.normpath("/" + device_path.lstrip("/")))

    def locate(self, device_path: str) -> PurePosixPath | None:
        """``device_path`` as a path relative to :attr:`root`, or None outside the device's folders.

        ``..`` is resolved lexically, so it can never climb out of the
        device's root; symlinks are left to :mod:`melt.virtual.confined`.
        """
        path = os.path.normpath("/" + device_path.lstrip("/"))
        for prefix, sub in self.mounts:
            if path == prefix or path.startswith(prefix + "/"):
                return PurePosixPath(sub, path[len(prefix):].lstrip("/"))
        return None

    def write(self, path: Path, text: str) -> None:
        """Replace the file at host ``path`` (under :attr:`root`), never through a symlink."""
        confined.write_atomic(self.root, confined.relative(self.root, path), text)

    def read(self, path: Path) -> str | None:
        """Stripped text of the plain file at host ``path`` (under :attr:`root`), or None."""
        try:
            return confined.read_text(self.root, confined.relative(self.root, path))
        except OSError:
            return None

    def create_file(self, path: Path) -> int:
        """A write fd on the file at host ``path`` (under :attr:`root`), truncated; never a symlink's target."""
        return confined.create(self.root, confined.relative(self.root, path))

    def mkdir(self, path: Path) -> Path:
        """Make the folder at host ``path`` (under :attr:`root`) and its parents, never through a symlink."""
        with confined.open_dir(self.root, confined.relative(self.root, path), create=True):
            return path

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
        self.root.mkdir(parents=True, exist_ok=True)
        for sub in ("data/local/tmp", "data/media/0", "vendor", "system/xbin", "tmp"):
            self.mkdir(self.root / sub)
        for sub in ("settings/system", "settings/global", "settings/secure", "state", "control"):
            self.mkdir(self.state_path(sub))
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
            if self.read(path) is None:
                self.write(path, value + "\n")
        # a restart is a reboot: "dumpsys battery unplug" and control files do not survive it
        self.clear(self.state_path("state"), "battery")
        self.clear(self.state_path("control"))
        self._create_sysfs()

    def write_props(self, props: dict[str, str]) -> None:
        """The props ``getprop`` answers (also ``/system/build.prop``)."""
        text = "".join(f"{k}={v}\n" for k, v in sorted(props.items()))
        self.write(self.state_path("props"), text)
        self.write(self.root / "system/build.prop", text)

    def _create_sysfs(self) -> None:
        ps = self.root / "sys/class/power_supply"
        self.mkdir(ps / "battery")
        self.mkdir(ps / "usb")
        self.mkdir(self.root / "sys/class/thermal")
        for name, value in (("type", "Battery"), ("present", "1"), ("health", "Good"),
                            ("technology", "Li-ion"), ("scope", "System")):
            self.write(ps / "battery" / name, value + "\n")
        self.mkdir(self.root / "sys/bus/iio/devices")
        self.write(ps / "usb/type", "USB\n")
        cpu = self.root / "sys/devices/system/cpu"
        self.mkdir(cpu)
        real = Path("/sys/devices/system/cpu")
        for name in ("online", "possible", "present", "offline", "kernel_max"):
            value = _read(real / name)
            self.write(cpu / name, value if value is not None else f"0-{self.cpu_count - 1}\n")
        for n in range(self.cpu_count):
            self.mkdir(cpu / f"cpu{n}/cpufreq")
            topo_src, topo = real / f"cpu{n}/topology", cpu / f"cpu{n}/topology"
            self.mkdir(topo)
            if topo_src.is_dir():
                for f in topo_src.iterdir():
                    value = _read(f)
                    if value is not None:
                        self.write(topo / f.name, value)
            self.write(cpu / f"cpu{n}/online", "1\n")

    def clear(self, folder: Path, name: str | None = None) -> None:
        """Remove ``folder/name`` (or everything in ``folder``) under :attr:`root`, following no symlink."""
        try:
            with confined.open_dir(self.root, confined.relative(self.root, folder)) as fd:
                for entry in [name] if name else os.listdir(fd):
                    if st.S_ISDIR(os.stat(entry, dir_fd=fd, follow_symlinks=False).st_mode):
                        shutil.rmtree(entry, dir_fd=fd, ignore_errors=True)
                    else:
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(entry, dir_fd=fd)
        except OSError:
            pass

    def thermal_zone_dir(self, index: int) -> Path:
        return self.root / f"sys/class/thermal/thermal_zone{index}"  # made by the first write

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
        """The host argv that runs ``argv`` inside the device's file layout.

        While the device's init runs (:meth:`start_init`), the argv joins its
        PID namespace and needs :attr:`pass_fds` passed to the child.
        """
        if self.isolation != "bwrap" and not force:
            return self.emulation.prefix(argv)
        # found on the host's PATH: the device environment's PATH has no bwrap
        bwrap = [shutil.which("bwrap") or "bwrap", "--die-with-parent"]
        if self._init is not None and not force:
            if self._init.proc.poll() is not None:
                log.warning("the device's init exited (%s); starting it again", self._init.proc.returncode)
                self.start_init()
            assert self._init is not None
            # the init's namespaces already hold the binfmt handler: no emulation prefix
            return bwrap + self._init.join_args() + ["--unshare-ipc"] + self._layout() + list(argv)
        spaces = ["--unshare-pid", "--unshare-ipc"] if self.private_pids else ["--unshare-ipc"]
        return self.emulation.prefix(bwrap + spaces + self._layout() + list(argv))

    def _layout(self) -> list[str]:
        """bubblewrap's file-tree arguments, ending with ``--``."""
        args: list[str] = []
        for entry in HOST_FOLDERS:
            host = "/" + entry
            if os.path.islink(host):
                args += ["--symlink", os.readlink(host), host]
            elif os.path.isdir(host):
                args += ["--ro-bind", host, host]
        for entry in self.host_etc:
            args += ["--ro-bind-try", f"/etc/{entry}", f"/etc/{entry}"]
        args += ["--dev", "/dev", "--proc", "/proc"]
        if not any(device == "/sys" for device, _ in self.mounts):
            args += ["--ro-bind", "/sys", "/sys"]
        for device, sub in reversed(self.mounts):
            outer = self._enclosing(device, sub)
            if outer is not None:
                # a folder inside a writable bind is a link, not a bind of its own: a program
                # could swap that folder for a symlink, and the next bind would follow it
                args += ["--symlink", outer, device]
            elif device in self.read_only:
                args += ["--ro-bind", str(self.root / sub), device]
            else:
                args += ["--bind", str(self.root / sub), device]
        return args + ["--chdir", "/", "--"]

    def _enclosing(self, device: str, sub: str) -> str | None:
        """The device path of ``sub`` through another, writable mount that holds it, if any."""
        for other, other_sub in self.mounts:
            if other != device and other not in self.read_only and sub.startswith(other_sub + "/"):
                return other + sub[len(other_sub):]
        return None

    # ----------------------------------------------------------------- init
    def start_init(self) -> int:
        """Start the device's init: the process holding its PID and IPC namespaces.

        Later :meth:`wrap` calls join them, so every ``adb shell`` sees the
        same processes (the device's only) and what a shell left running is
        reaped by this init. Returns its host pid; raises :class:`IsolationError`
        when bubblewrap does not start it.
        """
        self.stop_init()
        info_r, info_w = os.pipe()
        argv = self.emulation.prefix(
            [shutil.which("bwrap") or "bwrap", "--die-with-parent", "--unshare-pid", "--unshare-ipc",
             "--info-fd", str(info_w)] + self._layout()
            + ["/system/bin/sh", "-c", "echo ready; exec sleep 2147483647"])
        try:
            proc = subprocess.Popen(argv, pass_fds=(info_w,), stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    env=self.environment(), cwd="/")
        finally:
            os.close(info_w)
        try:
            info = json.loads(_read_until_eof(info_r, 20) or b"{}")
            assert proc.stdout is not None
            ready = _read_line(proc.stdout.fileno(), 20)  # the namespaces are complete
            if "child-pid" not in info or ready != b"ready\n":
                raise IsolationError(f"the device's init did not start: {_stderr(proc)}")
            self._init = _Init.open(proc, int(info["child-pid"]))
        except (OSError, ValueError) as exc:
            proc.kill()
            raise IsolationError(f"the device's init did not start: {exc}") from None
        finally:
            os.close(info_r)
        return proc.pid

    def stop_init(self) -> None:
        """Stop the device's init (every process in its namespaces dies with it)."""
        if self._init is not None:
            self._init.close()
            self._init = None

    @property
    def pass_fds(self) -> tuple[int, ...]:
        """File descriptors a :meth:`wrap` argv needs in its child (the init's namespaces)."""
        return self._init.fds() if self._init is not None else ()

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


def _is_same(fd: int, other: int | str) -> bool:
    a, b = os.fstat(fd), os.stat(other)
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


@dataclass
class _Init:
    """The running init of a device and open handles on its namespaces."""

    proc: subprocess.Popen[bytes]
    pidns: int
    userns: int | None  # the user namespace owning the PID namespace, if not this process's
    userns2: int | None  # the one the init's commands run in, if another (a uid mapped back)

    @classmethod
    def open(cls, proc: subprocess.Popen[bytes], pid: int) -> "_Init":
        pidns = os.open(f"/proc/{pid}/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
        owner = fcntl.ioctl(pidns, NS_GET_USERNS)
        own = os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
        userns: int | None = owner
        if _is_same(owner, "/proc/self/ns/user"):
            os.close(owner)
            userns = None
        userns2: int | None = own
        if _is_same(own, "/proc/self/ns/user") or (userns is not None and _is_same(own, userns)):
            os.close(own)
            userns2 = None
        return cls(proc, pidns, userns, userns2)

    def join_args(self) -> list[str]:
        args = []
        if self.userns is not None:
            args += ["--userns", str(self.userns)]
            if self.userns2 is not None:
                args += ["--userns2", str(self.userns2)]
        return args + ["--pidns", str(self.pidns)]

    def fds(self) -> tuple[int, ...]:
        return tuple(fd for fd in (self.pidns, self.userns, self.userns2) if fd is not None)

    def close(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        for fd in self.fds():
            os.close(fd)


def _read_until_eof(fd: int, timeout: float) -> bytes:
    data, deadline = b"", time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0 and select.select([fd], [], [], left)[0]:
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data


def _read_line(fd: int, timeout: float) -> bytes:
    data, deadline = b"", time.monotonic() + timeout
    while not data.endswith(b"\n") and (left := deadline - time.monotonic()) > 0:
        if not select.select([fd], [], [], left)[0]:
            break
        chunk = os.read(fd, 1)
        if not chunk:
            break
        data += chunk
    return data


def _stderr(proc: subprocess.Popen[bytes]) -> str:
    proc.kill()
    _, err = proc.communicate(timeout=5)
    lines = err.decode(errors="replace").strip().splitlines()
    return lines[-1] if lines else f"exit {proc.returncode}"

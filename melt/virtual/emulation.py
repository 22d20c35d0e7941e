"""How a virtual phone runs machine code of its own ABI on this host: qemu-user.

A phone declares its ABI (``virtual.abi``, ``arm64-v8a`` by default). When
that is this machine's own ABI, its binaries run natively. Otherwise the
phone needs the kernel to hand them to ``qemu-<arch>`` (Debian package
``qemu-user-static``), through a binfmt_misc handler. Two ways, tried in
this order by :func:`plan`:

``binfmt``
    The handler is registered system-wide (``/proc/sys/fs/binfmt_misc/qemu-aarch64``
    enabled), as systemd-binfmt does at boot on a machine with
    qemu-user-static installed. Nothing else to do.
``userns``
    Linux 6.7 and later give each user namespace its own binfmt_misc. Every
    command of the phone then starts in a fresh user and mount namespace
    that mounts binfmt_misc, registers the handler from
    ``/usr/lib/binfmt.d/qemu-<arch>.conf`` (with the ``F`` flag, so the
    interpreter is opened once, before bubblewrap changes the file tree),
    and execs the usual sandbox. No root, nothing changed on the host.

When neither works the phone refuses to start, with the commands that
register the handler system-wide (as root). :func:`probe_elf` is a 132-byte
static program for the ABI that exits with status 42: the phone runs it
through its own sandbox at start, so "works" means "really ran".
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from melt.devices.abi import host_abi
from melt.errors import MeltError

if TYPE_CHECKING:  # pragma: no cover
    from melt.virtual.sandbox import Sandbox

BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
BINFMT_CONF_DIRS = (Path("/etc/binfmt.d"), Path("/usr/lib/binfmt.d"), Path("/run/binfmt.d"))
PROBE_STATUS = 42
PROBE_DEVICE_PATH = "/data/melt-virtual/abi-probe"

#: ABI -> (qemu's name for the machine, ELF e_machine, code that exits with PROBE_STATUS)
_ARCHES: dict[str, tuple[str, int, bytes]] = {
    # movz x0, #42 ; movz x8, #93 (exit) ; svc #0
    "arm64-v8a": ("aarch64", 183, struct.pack("<III", 0xD2800540, 0xD2800BA8, 0xD4000001)),
    # mov edi, 42 ; mov eax, 60 (exit) ; syscall
    "x86_64": ("x86_64", 62, bytes.fromhex("bf2a000000" "b83c000000" "0f05")),
}

#: ABIs a virtual phone can declare
SUPPORTED_ABIS = tuple(_ARCHES)


class EmulationError(MeltError):
    """The phone's ABI is not this machine's and qemu-user cannot run its code here."""


@dataclass(frozen=True)
class Emulation:
    """How the phone runs code of ``abi``: ``native``, ``binfmt`` or ``userns`` (see the module)."""

    abi: str
    mode: str
    interpreter: str | None = None   # the qemu binary the handler runs
    version: str | None = None       # "qemu-aarch64 version 7.2.x ..." (first line)
    registration: str | None = None  # the binfmt_misc line ``userns`` registers
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def emulated(self) -> bool:
        """True when the phone's code runs under qemu, not on the host CPU directly."""
        return self.mode != "native"

    def props(self) -> dict[str, str]:
        """The props that tell melt (and a person with getprop) how the code runs."""
        if not self.emulated:
            return {"ro.melt.emulated": "0"}
        return {"ro.melt.emulated": "1", "ro.melt.emulator": self.version or "qemu-user"}

    def prefix(self, argv: Sequence[str]) -> list[str]:
        """``argv`` started so that the phone's code can run (unchanged unless ``userns``)."""
        argv = list(argv)
        if self.mode != "userns" or not argv:
            return argv
        if not os.path.isabs(argv[0]):
            argv[0] = shutil.which(argv[0]) or argv[0]
        if os.getuid() != 0 and os.path.basename(argv[0]) == "bwrap":
            # the namespace maps this user to root (to mount binfmt_misc); bubblewrap
            # maps it back, so the phone's commands see the uid they would without it
            argv[1:1] = ["--unshare-user", "--uid", str(os.getuid()), "--gid", str(os.getgid())]
        mount = shutil.which("mount") or "/bin/mount"
        script = (
            f"{mount} -t binfmt_misc binfmt_misc {BINFMT_DIR} && "
            f'printf %s "$1" > {BINFMT_DIR}/register && shift && exec "$@"'
        )
        unshare = shutil.which("unshare") or "unshare"
        return [unshare, "--user", "--map-root-user", "--mount", "--",
                "/bin/sh", "-c", script, "melt-binfmt", self.registration or "", *argv]

    def describe(self) -> str:
        if self.mode == "native":
            return f"{self.abi} code runs natively"
        how = {"binfmt": "the system's binfmt_misc handler",
               "userns": "a binfmt_misc handler private to the phone's user namespace"}[self.mode]
        return f"{self.abi} code runs under {self.version or 'qemu-user'}, through {how}"


def native() -> Emulation:
    """Code of this machine's own ABI, run as it is."""
    return Emulation(abi=host_abi(), mode="native")


def qemu_arch(abi: str) -> str:
    """qemu's machine name for ``abi`` (``aarch64`` for ``arm64-v8a``)."""
    try:
        return _ARCHES[abi][0]
    except KeyError:
        raise EmulationError(f"a virtual phone cannot have ABI {abi!r}: use one of "
                             f"{', '.join(SUPPORTED_ABIS)}") from None


def probe_elf(abi: str) -> bytes:
    """A minimal static ELF executable for ``abi`` that exits with :data:`PROBE_STATUS`."""
    qemu_arch(abi)
    _, machine, code = _ARCHES[abi]
    vaddr, header, phdr = 0x400000, 64, 56
    size = header + phdr + len(code)
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)  # 64-bit, little-endian, SysV
    ehdr = ident + struct.pack("<HHIQQQIHHHHHH", 2, machine, 1, vaddr + header + phdr,
                               header, 0, 0, header, phdr, 1, 0, 0, 0)
    load = struct.pack("<IIQQQQQQ", 1, 5, 0, vaddr, vaddr, size, size, 0x1000)
    return ehdr + load + code


def host_registration(arch: str) -> bool:
    """True when this kernel already hands ``arch`` binaries to a qemu handler."""
    try:
        status = (BINFMT_DIR / "status").read_text().strip()
        entry = (BINFMT_DIR / f"qemu-{arch}").read_text().splitlines()
    except OSError:
        return False
    return status == "enabled" and bool(entry) and entry[0].strip() == "enabled"


def registration_line(arch: str, qemu: str) -> str:
    """The binfmt_misc line for ``arch``: the system's ``qemu-<arch>.conf``, with the ``F`` flag.

    Without a conf file (qemu installed by hand) the line is built from the
    ELF magic of the machine, for the interpreter ``qemu``.
    """
    for folder in BINFMT_CONF_DIRS:
        conf = folder / f"qemu-{arch}.conf"
        try:
            line = next((ln.strip() for ln in conf.read_text().splitlines()
                         if ln.strip() and not ln.lstrip().startswith(("#", ";"))), "")
        except OSError:
            continue
        fields = line.split(line[0]) if line else []
        # :name:type:offset:magic:mask:interpreter:flags
        if len(fields) >= 8 and Path(fields[6]).exists():
            flags = fields[7] if "F" in fields[7] else fields[7] + "F"
            return line[0].join(fields[:7] + [flags])
    machine = next(m for a, m, _ in _ARCHES.values() if a == arch)
    magic = b"\x7fELF\x02\x01\x01" + bytes(9) + struct.pack("<HH", 2, machine)
    mask = b"\xff" * 7 + b"\x00" + b"\xff" * 8 + b"\xfe\xff\xff\xff"
    esc = lambda raw: "".join(f"\\x{b:02x}" for b in raw)  # noqa: E731
    return f":qemu-{arch}:M::{esc(magic)}:{esc(mask)}:{qemu}:F"


def _qemu_binary(arch: str) -> str | None:
    return shutil.which(f"qemu-{arch}-static") or shutil.which(f"qemu-{arch}")


def _qemu_version(qemu: str) -> str | None:
    try:
        out = subprocess.run([qemu, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    first = out.strip().splitlines()[:1]
    return re.sub(r"\s+", " ", first[0]).strip() if first else None


def instructions(arch: str) -> str:
    """What to run, as root, to register the handler for ``arch`` system-wide."""
    return (f"as root: apt-get install qemu-user-static, then "
            f"mount -t binfmt_misc binfmt_misc {BINFMT_DIR} (if it is not mounted) and "
            f"cat /usr/lib/binfmt.d/qemu-{arch}.conf > {BINFMT_DIR}/register "
            f"(or systemctl restart systemd-binfmt); or give the phone virtual.abi: {host_abi()}")


def plan(abi: str, run_probe: Callable[["Emulation"], tuple[int, str]]) -> Emulation:
    """Choose and check how the phone runs ``abi`` code; raises :class:`EmulationError`.

    ``run_probe(emulation)`` runs :func:`probe_elf` the way the phone would
    run a command under ``emulation`` and returns ``(exit status, stderr)``.
    """
    arch = qemu_arch(abi)
    if abi == host_abi():
        return Emulation(abi=abi, mode="native")
    qemu = _qemu_binary(arch)
    version = _qemu_version(qemu) if qemu else None
    tried: list[str] = []
    if host_registration(arch):
        candidate = Emulation(abi=abi, mode="binfmt", interpreter=qemu, version=version)
        status, err = run_probe(candidate)
        if status == PROBE_STATUS:
            return candidate
        tried.append(f"the system's qemu-{arch} handler did not run it ({_why(status, err)})")
    if qemu is None:
        tried.append(f"qemu-{arch}-static is not installed")
    elif shutil.which("unshare") is None:
        tried.append("unshare (util-linux) is not on PATH")
    else:
        candidate = Emulation(abi=abi, mode="userns", interpreter=qemu, version=version,
                              registration=registration_line(arch, qemu))
        status, err = run_probe(candidate)
        if status == PROBE_STATUS:
            return candidate
        tried.append(f"a private binfmt_misc (Linux >= 6.7 with user namespaces) failed: "
                     f"{_why(status, err)}")
    raise EmulationError(
        f"this {host_abi()} machine cannot run the phone's {abi} code: {'; '.join(tried)}. "
        f"To fix it, {instructions(arch)}"
    )


def _why(status: int, err: str) -> str:
    last = [ln for ln in err.strip().splitlines() if ln.strip()][-1:]
    return f"exit {status}" + (f": {last[0][:200]}" if last else "")


def setup_sandbox(sandbox: "Sandbox", abi: str) -> Emulation:
    """Find how ``sandbox`` runs ``abi`` code, set ``sandbox.emulation``; raises :class:`EmulationError`.

    The probe program is written to the phone's ``/data/melt-virtual/abi-probe``
    and run exactly as the phone runs a command (sandbox, environment, working
    folder), so a handler that does not reach inside the sandbox is caught here.
    """
    probe = sandbox.state_path("abi-probe")
    probe.write_bytes(probe_elf(abi))
    probe.chmod(0o755)
    target = PROBE_DEVICE_PATH if sandbox.isolation == "bwrap" else str(probe)

    def run(candidate: Emulation) -> tuple[int, str]:
        saved, sandbox.emulation = sandbox.emulation, candidate
        try:
            argv = sandbox.wrap([target])
        finally:
            sandbox.emulation = saved
        try:
            done = subprocess.run(argv, capture_output=True, timeout=60, cwd=sandbox.host_cwd(),
                                  env=sandbox.environment(), stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return -1, str(exc)
        return done.returncode, done.stderr.decode(errors="replace")

    sandbox.emulation = plan(abi, run)
    return sandbox.emulation

"""Which machine code a device runs, and whether a build's binaries fit it.

Devices name their instruction set with Android's ABI names (``arm64-v8a``,
``armeabi-v7a``, ``x86_64``, ``x86``): a phone reports it in
``ro.product.cpu.abi``, this machine and SSH boards in ``uname -m``, which
:func:`abi_of_machine` translates. Before anything is pushed, the runner
reads the ELF header of every binary and refuses a build made for another
instruction set with one clear line (:func:`check_binaries`), instead of
letting the device answer "Exec format error" in the middle of a job.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Mapping

from melt.errors import AbiMismatchError
from melt.parsers.elf import read_elf

#: ``uname -m`` -> Android ABI name
_MACHINE_ABI = {
    "x86_64": "x86_64",
    "amd64": "x86_64",
    "aarch64": "arm64-v8a",
    "arm64": "arm64-v8a",
    "armv8l": "armeabi-v7a",
    "armv7l": "armeabi-v7a",
    "i386": "x86",
    "i686": "x86",
    "riscv64": "riscv64",
}


def abi_of_machine(machine: str) -> str:
    """The ABI name of a ``uname -m`` machine (unknown names are returned as they are)."""
    return _MACHINE_ABI.get(machine.strip().lower(), machine.strip().lower())


def host_abi() -> str:
    """The ABI of the machine melt runs on (``x86_64`` on a PC, ``arm64-v8a`` on an Arm server)."""
    return abi_of_machine(platform.machine())


def check_binaries(binaries: Mapping[str, Path], abi: str, *, device: str, build: str) -> None:
    """Raise :class:`AbiMismatchError` unless every ELF binary in ``binaries`` is for ``abi``.

    ``device`` and ``build`` (a profile name or a folder) only make the
    message. Files that are not ELF (a wrapper script) are left to the device.
    """
    for name, path in sorted(binaries.items()):
        try:
            info = read_elf(path)
        except OSError as exc:
            raise AbiMismatchError(f"cannot read {path}: {exc.strerror}") from None
        if info is None or info.abi == abi:
            continue
        raise AbiMismatchError(
            f"refusing to run {name} on {device}: the {build} build is {info.describe()} "
            f"({info.abi or 'no Android ABI'}), but {device} runs {abi} code; "
            f"set build_profile: auto in its device config (or a profile for {abi})"
        )

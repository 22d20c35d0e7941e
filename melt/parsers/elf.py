"""ELF headers: which machine a binary is for, and whether it needs a loader.

Only the file header and the program headers are read (the first few
hundred bytes), so checking a 10 MB binary costs nothing. Like every parser
here it never raises on garbage: :func:`parse_elf` returns ``None`` for
bytes that are not an ELF file, and leaves out what it cannot read.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

ELF_MAGIC = b"\x7fELF"
_PT_INTERP = 3

#: e_machine -> (name as ``file`` prints it, Android ABI of that machine at 64 / 32 bits)
MACHINES: dict[int, tuple[str, str | None, str | None]] = {
    3: ("Intel 80386", None, "x86"),
    8: ("MIPS", "mips64", "mips"),
    20: ("PowerPC", None, None),
    21: ("PowerPC64", None, None),
    40: ("ARM", None, "armeabi-v7a"),
    62: ("x86-64", "x86_64", None),
    183: ("ARM aarch64", "arm64-v8a", None),
    243: ("RISC-V", "riscv64", None),
}


@dataclass(frozen=True)
class ElfInfo:
    """What the header says. ``abi`` is the Android ABI name (``None`` when it has none)."""

    machine: str          # "ARM aarch64", "x86-64", or "e_machine 1234"
    bits: int             # 32 or 64
    little_endian: bool
    abi: str | None
    interpreter: str | None  # the program loader it asks for; None for a static binary or unknown
    static: bool | None      # no loader needed; None when the program headers were out of reach

    def describe(self) -> str:
        """``"ELF 64-bit ARM aarch64, statically linked"`` (what a person expects from ``file``)."""
        link = {True: ", statically linked", False: f", dynamically linked ({self.interpreter})",
                None: ""}[self.static]
        return f"ELF {self.bits}-bit {self.machine}{link}"


def parse_elf(head: bytes) -> ElfInfo | None:
    """The :class:`ElfInfo` of a file whose first bytes are ``head`` (4 KiB is plenty).

    ``None`` when ``head`` is not an ELF header. The interpreter is found only
    when the program headers and the path they point to lie within ``head``.
    """
    if len(head) < 20 or head[:4] != ELF_MAGIC or head[4] not in (1, 2) or head[5] not in (1, 2):
        return None
    bits = 64 if head[4] == 2 else 32
    little = head[5] == 1
    end = "<" if little else ">"
    (e_machine,) = struct.unpack_from(end + "H", head, 18)
    name, abi64, abi32 = MACHINES.get(e_machine, (f"e_machine {e_machine}", None, None))
    found, interpreter = _interpreter(head, bits, end)
    return ElfInfo(
        machine=name,
        bits=bits,
        little_endian=little,
        abi=abi64 if bits == 64 else abi32,
        interpreter=interpreter,
        static=(interpreter is None) if found else None,
    )


def read_elf(path: Path | str, *, size: int = 4096) -> ElfInfo | None:
    """:func:`parse_elf` of the first ``size`` bytes of ``path``; raises ``OSError`` if unreadable."""
    with open(path, "rb") as fh:
        return parse_elf(fh.read(size))


def _interpreter(head: bytes, bits: int, end: str) -> tuple[bool, str | None]:
    """``(read all program headers, PT_INTERP path or None)``."""
    try:
        if bits == 64:
            e_phoff, = struct.unpack_from(end + "Q", head, 32)
            e_phentsize, e_phnum = struct.unpack_from(end + "HH", head, 54)
        else:
            e_phoff, = struct.unpack_from(end + "I", head, 28)
            e_phentsize, e_phnum = struct.unpack_from(end + "HH", head, 42)
        if e_phnum > 256:  # not a real program: say nothing about its linkage
            return False, None
        for i in range(e_phnum):
            at = e_phoff + i * e_phentsize
            (p_type,) = struct.unpack_from(end + "I", head, at)
            if p_type != _PT_INTERP:
                continue
            if bits == 64:
                offset, = struct.unpack_from(end + "Q", head, at + 8)
                filesz, = struct.unpack_from(end + "Q", head, at + 32)
            else:
                offset, = struct.unpack_from(end + "I", head, at + 4)
                filesz, = struct.unpack_from(end + "I", head, at + 16)
            raw = head[offset:offset + filesz]
            return True, raw.split(b"\0", 1)[0].decode("ascii", "replace") or "(beyond the header)"
    except (struct.error, OverflowError):  # headers past the bytes we were given
        return False, None
    return True, None

"""ELF headers: machine, ABI and linkage of real binaries, and garbage never raises."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from melt.devices.abi import abi_of_machine, host_abi
from melt.parsers.elf import parse_elf, read_elf
from melt.virtual.emulation import probe_elf
from tests.helpers import need


def test_this_pythons_interpreter_is_a_dynamic_binary_of_this_machine():
    info = read_elf(Path(sys.executable).resolve())
    assert info is not None and info.bits == 64 and info.little_endian
    assert info.abi == host_abi()
    assert info.static is False and info.interpreter and info.interpreter.startswith("/lib")
    assert "dynamically linked" in info.describe()


@pytest.mark.parametrize("abi, machine", [("arm64-v8a", "ARM aarch64"), ("x86_64", "x86-64")])
def test_the_probe_programs_are_static_executables_of_their_abi(abi, machine):
    info = parse_elf(probe_elf(abi))
    assert info is not None
    assert (info.abi, info.machine, info.static, info.interpreter) == (abi, machine, True, None)
    assert info.describe() == f"ELF 64-bit {machine}, statically linked"


def test_file_agrees_with_the_parser(tmp_path):
    need(shutil.which("file") is not None, "file(1) (apt-get install file)")
    path = tmp_path / "probe"
    path.write_bytes(probe_elf("arm64-v8a"))
    out = subprocess.run(["file", "-b", str(path)], capture_output=True, text=True).stdout
    assert "ARM aarch64" in out and "statically linked" in out


def test_not_elf_and_truncated_headers():
    assert parse_elf(b"#!/bin/sh\necho hi\n") is None
    assert parse_elf(b"\x7fELF") is None
    head = probe_elf("arm64-v8a")[:40]  # the machine is there, the program headers are not
    info = parse_elf(head)
    assert info is not None and info.abi == "arm64-v8a" and info.static is None
    assert info.describe() == "ELF 64-bit ARM aarch64"


def test_machine_names():
    assert abi_of_machine("aarch64") == abi_of_machine("arm64") == "arm64-v8a"
    assert abi_of_machine("x86_64") == abi_of_machine("AMD64") == "x86_64"
    assert abi_of_machine("armv7l") == "armeabi-v7a"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.integers(0, 299), st.binary(max_size=8))
def test_garbage_and_mutations_never_raise(garbage, at, patch):
    parse_elf(garbage)
    parse_elf(b"\x7fELF" + garbage)
    seed = bytearray(probe_elf("arm64-v8a"))
    seed[at:at + len(patch)] = patch
    info = parse_elf(bytes(seed))
    assert info is None or info.bits in (32, 64)


def test_a_build_for_another_abi_is_refused_in_one_line(tmp_path):
    from melt.devices.abi import check_binaries
    from melt.errors import AbiMismatchError

    host_bin = Path(sys.executable).resolve()
    script = tmp_path / "wrapper.sh"
    script.write_text("#!/bin/sh\nexec true\n")
    check_binaries({"python": host_bin, "wrapper": script}, host_abi(), device="here", build="'host'")
    with pytest.raises(AbiMismatchError) as err:
        check_binaries({"llama-bench": host_bin}, "arm64-v8a", device="virtual-phone", build="'host'")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("refusing to run llama-bench on virtual-phone: the 'host' build is ELF 64-bit")
    assert f"({host_abi()}), but virtual-phone runs arm64-v8a code" in message
    assert "build_profile: auto" in message

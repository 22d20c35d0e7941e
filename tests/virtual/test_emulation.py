"""The virtual phone's ABI: it reports arm64-v8a and runs arm64 code under qemu-user.

An arm64 program compiled here with Debian's cross compiler is pushed with
the real adb, run through ``adb shell`` (its output comes from qemu's
emulated aarch64), and pulled back byte-identical. An x86_64 phone runs this
machine's code natively and refuses arm64 code as a real x86_64 device does.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from melt.devices.abi import host_abi
from melt.virtual import emulation
from melt.virtual.config import VirtualPhoneConfig
from melt.virtual.emulation import EmulationError, plan, probe_elf, registration_line
from tests.helpers import melt

pytestmark = pytest.mark.adb

HELLO = r"""
#include <stdio.h>
#include <sys/utsname.h>
int main(int argc, char **argv) {
    struct utsname u;
    uname(&u);
    printf("machine=%s args=%d\n", u.machine, argc);
    return 7;
}
"""


@pytest.fixture(scope="module")
def arm64_hello(tmp_path_factory) -> Path:
    cc = shutil.which("aarch64-linux-gnu-gcc")
    if cc is None:
        pytest.fail("aarch64-linux-gnu-gcc is missing: make deps installs g++-aarch64-linux-gnu")
    folder = tmp_path_factory.mktemp("arm64")
    (folder / "hello.c").write_text(HELLO)
    subprocess.run([cc, "-static", "-O1", "-o", str(folder / "hello"), str(folder / "hello.c")], check=True)
    return folder / "hello"


@pytest.mark.skipif(host_abi() != "x86_64", reason="emulates arm64 on an x86-64 machine")
def test_arm64_phone_reports_its_abi_and_runs_arm64_code(adb_server, virtual_phone_factory,
                                                          arm64_hello, tmp_path):
    phone = virtual_phone_factory(VirtualPhoneConfig())  # the default ABI: arm64-v8a
    serial = adb_server.connect(phone.address)
    shell = lambda cmd: adb_server.run("-s", serial, "shell", cmd, timeout=60)  # noqa: E731
    assert shell("getprop ro.product.cpu.abi").stdout == "arm64-v8a\n"
    assert shell("getprop ro.product.cpu.abilist").stdout == "arm64-v8a\n"
    assert shell("getprop ro.melt.emulated").stdout == "1\n"
    assert shell("getprop ro.melt.emulator").stdout.startswith("qemu-aarch64 version ")

    assert adb_server.run("-s", serial, "push", str(arm64_hello), "/data/local/tmp/hello").returncode == 0
    done = shell("chmod 755 /data/local/tmp/hello && /data/local/tmp/hello a b")
    assert (done.returncode, done.stdout) == (7, "machine=aarch64 args=3\n"), done.stderr

    back = tmp_path / "pulled"
    assert adb_server.run("-s", serial, "pull", "/data/local/tmp/hello", str(back)).returncode == 0
    assert back.read_bytes() == arm64_hello.read_bytes()
    kind = subprocess.run(["file", "-b", str(back)], capture_output=True, text=True).stdout
    assert "ARM aarch64" in kind and "statically linked" in kind

    listed = json.loads(melt("virtual", "list", "--json", "--state-dir", str(phone.state_dir)).stdout)
    assert [(p["abi"], p["emulation"]) for p in listed] in ([("arm64-v8a", "userns")],
                                                            [("arm64-v8a", "binfmt")])


@pytest.mark.skipif(host_abi() != "x86_64", reason="an x86_64 phone is native only on x86-64")
def test_x86_64_phone_runs_natively_and_cannot_run_arm64_code(adb_server, virtual_phone_factory,
                                                               arm64_hello):
    phone = virtual_phone_factory(VirtualPhoneConfig(abi="x86_64"))
    serial = adb_server.connect(phone.address)
    shell = lambda cmd: adb_server.run("-s", serial, "shell", cmd, timeout=60)  # noqa: E731
    assert shell("getprop ro.product.cpu.abi").stdout == "x86_64\n"
    assert shell("getprop ro.melt.emulated").stdout == "0\n"
    assert adb_server.run("-s", serial, "push", str(arm64_hello), "/data/local/tmp/hello").returncode == 0
    done = shell("chmod 755 /data/local/tmp/hello && /data/local/tmp/hello")
    # refused by the kernel for its machine, as a real x86_64 phone's shell says it
    assert done.returncode != 0 and "machine=" not in done.stdout
    assert "/data/local/tmp/hello: not executable: 64-bit ELF file" in done.stderr, done.stderr


def test_config_refuses_unknown_abis_and_abi_props():
    with pytest.raises(ValueError, match="abi must be one of arm64-v8a, x86_64"):
        VirtualPhoneConfig(abi="mips")
    with pytest.raises(ValueError, match="set abi instead of ro.product.cpu.abi"):
        VirtualPhoneConfig(props={"ro.product.cpu.abi": "x86"})
    props = VirtualPhoneConfig().all_props(5555)
    assert props["ro.product.cpu.abi"] == props["ro.product.cpu.abilist64"] == "arm64-v8a"


def test_when_nothing_can_run_arm64_code_the_error_says_what_to_run(monkeypatch):
    monkeypatch.setattr(emulation, "host_abi", lambda: "x86_64")
    monkeypatch.setattr(emulation, "host_registration", lambda arch: False)
    real_which = shutil.which
    monkeypatch.setattr(emulation.shutil, "which",
                        lambda name, *a, **k: None if name == "unshare" else real_which(name, *a, **k))
    with pytest.raises(EmulationError) as err:
        plan("arm64-v8a", lambda candidate: pytest.fail("nothing should run"))
    message = str(err.value)
    assert "\n" not in message
    assert "cannot run the phone's arm64-v8a code: unshare (util-linux) is not on PATH" in message
    assert "mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc" in message
    assert "cat /usr/lib/binfmt.d/qemu-aarch64.conf > /proc/sys/fs/binfmt_misc/register" in message
    assert "virtual.abi: x86_64" in message


def test_a_failing_private_handler_is_reported_with_its_error(monkeypatch):
    monkeypatch.setattr(emulation, "host_abi", lambda: "x86_64")
    monkeypatch.setattr(emulation, "host_registration", lambda arch: False)
    with pytest.raises(EmulationError, match="private binfmt_misc .* failed: exit 1: mount: permission denied"):
        plan("arm64-v8a", lambda candidate: (1, "mount: permission denied\n"))


def test_a_system_wide_handler_is_used_as_it_is(monkeypatch):
    monkeypatch.setattr(emulation, "host_abi", lambda: "x86_64")
    monkeypatch.setattr(emulation, "host_registration", lambda arch: True)
    seen = []
    chosen = plan("arm64-v8a", lambda c: (seen.append(c.mode), (emulation.PROBE_STATUS, ""))[1])
    assert seen == ["binfmt"] and chosen.mode == "binfmt" and chosen.prefix(["sh"]) == ["sh"]


def test_registration_line_keeps_the_system_conf_and_adds_fix_binary(tmp_path, monkeypatch):
    conf = tmp_path / "qemu-aarch64.conf"
    conf.write_text(f"# a comment\n:qemu-aarch64:M::\\x7fELF:\\xff\\xff\\xff\\xff:{shutil.which('sh')}:OC\n")
    monkeypatch.setattr(emulation, "BINFMT_CONF_DIRS", (tmp_path,))
    assert registration_line("aarch64", "/q") == f":qemu-aarch64:M::\\x7fELF:\\xff\\xff\\xff\\xff:{shutil.which('sh')}:OCF"
    monkeypatch.setattr(emulation, "BINFMT_CONF_DIRS", (tmp_path / "none",))
    line = registration_line("aarch64", "/usr/bin/qemu-aarch64-static")
    assert line.startswith(":qemu-aarch64:M::\\x7f\\x45\\x4c\\x46\\x02\\x01\\x01")
    assert line.endswith("\\x02\\x00\\xb7\\x00:\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\x00\\xff\\xff\\xff\\xff"
                         "\\xff\\xff\\xff\\xff\\xfe\\xff\\xff\\xff:/usr/bin/qemu-aarch64-static:F")
    assert len(probe_elf("arm64-v8a")) == 132

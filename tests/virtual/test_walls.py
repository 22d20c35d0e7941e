"""The virtual phone's walls: a hostile program on the phone cannot reach this host's files.

Each test runs the attack for real: a script pushed through the real adb
server and run with ``adb shell``, symlinks it plants then pulled, stat'ed,
listed and pushed through by the adb client, and files the host-side model
writes. A canary file in a folder of this host must stay unread and unchanged.
"""

from __future__ import annotations

import io
import os
import subprocess
import time
from pathlib import Path

import pytest

from melt.virtual.phone import VirtualPhone
from melt.virtual.testing import AdbServer

pytestmark = pytest.mark.adb

SECRET = "canary-secret-4711"

HOSTILE = r"""#!/system/bin/sh
# tries to read and write a host file, every way a program on the phone could
C="$1"; D="${C%/*}"; PHONE_PID="$2"; TEST_PID="$3"
try_read() { if cat "$1" 2>/dev/null | grep -q canary-secret; then echo "LEAK $2"; fi; }
try_write() { if (echo pwned > "$1") 2>/dev/null; then echo "WROTE $2"; fi; }
for p in "$C" "/data/local/tmp/../../../..$C" "/proc/1/root$C" "/proc/$PHONE_PID/root$C" \
         "/proc/$TEST_PID/root$C" "/proc/self/root$C" "/sdcard/../../..$C"; do
  try_read "$p" "$p"; try_write "$p" "$p"
done
for pid in /proc/[0-9]*; do try_read "$pid/root$C" "$pid/root"; try_write "$pid/root$C" "$pid/root"; done
ln -s "$C" /data/local/tmp/link 2>/dev/null; try_read /data/local/tmp/link "symlink"
ln -s / /data/local/tmp/rootlink 2>/dev/null; try_read "/data/local/tmp/rootlink$C" "root symlink"
if [ -e "$D" ]; then echo "SEES $D"; fi
if [ -e /proc/$PHONE_PID/cmdline ] && grep -q melt.virtual /proc/$PHONE_PID/cmdline; then echo "SEES host pid $PHONE_PID"; fi
if [ -e /proc/$TEST_PID/cmdline ] && grep -q pytest /proc/$TEST_PID/cmdline; then echo "SEES host pid $TEST_PID"; fi
echo done
"""


@pytest.fixture
def canary(tmp_path: Path) -> Path:
    folder = tmp_path / "host-only"
    folder.mkdir()
    path = folder / "canary.txt"
    path.write_text(SECRET + "\n")
    return path


def _adb(server: AdbServer, serial: str, *args: str) -> subprocess.CompletedProcess[str]:
    return server.run("-s", serial, *args)


def test_a_program_on_the_phone_cannot_reach_a_host_file(adb_server: AdbServer, adb_serial: str,
                                                         virtual_phone: VirtualPhone, canary: Path,
                                                         tmp_path: Path) -> None:
    script = tmp_path / "hostile.sh"
    script.write_text(HOSTILE)
    assert _adb(adb_server, adb_serial, "push", str(script), "/data/local/tmp/hostile.sh").returncode == 0
    assert virtual_phone.process is not None
    done = _adb(adb_server, adb_serial, "shell",
                f"sh /data/local/tmp/hostile.sh {canary} {virtual_phone.process.pid} {os.getpid()}")
    assert done.stdout.strip().splitlines() == ["done"], done.stdout + done.stderr
    assert canary.read_text() == SECRET + "\n"
    assert sorted(p.name for p in canary.parent.iterdir()) == ["canary.txt"]


def test_the_phone_sees_only_its_own_processes(adb_server: AdbServer, adb_serial: str) -> None:
    listed = _adb(adb_server, adb_serial, "shell", "ps -A -o pid,args").stdout
    pids = [int(line.split()[0]) for line in listed.splitlines()[1:] if line.strip()]
    assert 1 in pids and max(pids) < 100, listed  # a namespace of its own: init is pid 1
    assert "bin/pytest" not in listed and "melt.virtual serve" not in listed


def test_adb_pull_stat_and_list_do_not_follow_a_planted_symlink(adb_server: AdbServer, adb_serial: str,
                                                                canary: Path, tmp_path: Path) -> None:
    _adb(adb_server, adb_serial, "shell",
         f"ln -s {canary} /data/local/tmp/link && ln -s / /data/local/tmp/rootlink"
         f" && ln -s {canary.parent} /data/local/tmp/dirlink")
    for remote in ("/data/local/tmp/link", f"/data/local/tmp/rootlink{canary}",
                   f"/data/local/tmp/dirlink/{canary.name}", f"/data/local/tmp/../../..{canary}", str(canary)):
        back = tmp_path / "pulled"
        done = _adb(adb_server, adb_serial, "pull", remote, str(back))
        assert done.returncode != 0, remote
        assert not back.exists() or SECRET not in back.read_text(errors="replace")
    listed = _adb(adb_server, adb_serial, "ls", "/data/local/tmp/dirlink/").stdout
    assert canary.name not in listed
    import adbutils

    device = adbutils.AdbClient(port=adb_server.port).device(adb_serial)
    info = device.sync.stat("/data/local/tmp/link")
    assert info.size == len(str(canary))  # the link itself (lstat), not the canary behind it


def test_adb_push_through_a_planted_symlink_or_dotdot_stays_inside(adb_server: AdbServer, adb_serial: str,
                                                                   virtual_phone: VirtualPhone, canary: Path,
                                                                   tmp_path: Path) -> None:
    _adb(adb_server, adb_serial, "shell",
         f"ln -s {canary.parent} /data/local/tmp/dirlink && ln -s {canary} /data/local/tmp/filelink")
    payload = tmp_path / "payload"
    payload.write_text("pwned\n")
    refused = (f"/data/local/tmp/dirlink/{canary.name}", "/data/local/tmp/dirlink/new.txt",
               "/data/local/tmp/filelink")
    for remote in refused:
        assert _adb(adb_server, adb_serial, "push", str(payload), remote).returncode != 0, remote
    # the host's path, with or without .., lands in the phone's own /tmp
    assert _adb(adb_server, adb_serial, "push", str(payload), str(canary)).returncode == 0
    assert virtual_phone.host_path(str(canary)).read_text() == "pwned\n"
    dotdot = f"/data/local/tmp/../../../..{canary.parent}/dotdot.txt"
    assert _adb(adb_server, adb_serial, "push", str(payload), dotdot).returncode == 0
    assert virtual_phone.host_path(f"{canary.parent}/dotdot.txt").read_text() == "pwned\n"
    assert canary.read_text() == SECRET + "\n"
    assert sorted(p.name for p in canary.parent.iterdir()) == ["canary.txt"]


def test_a_pushed_file_loses_its_setuid_bit(adb_server: AdbServer, adb_serial: str,
                                            virtual_phone: VirtualPhone) -> None:
    import adbutils

    device = adbutils.AdbClient(port=adb_server.port).device(adb_serial)
    device.sync.push(io.BytesIO(b"#!/system/bin/sh\n"), "/data/local/tmp/suid", mode=0o4755)
    assert virtual_phone.host_path("/data/local/tmp/suid").stat().st_mode & 0o7777 == 0o755


def test_the_host_side_model_does_not_write_through_planted_symlinks(adb_server: AdbServer, adb_serial: str,
                                                                     virtual_phone: VirtualPhone,
                                                                     canary: Path) -> None:
    """The model writes sysfs and state files the phone can replace: a symlink there is not followed."""
    done = _adb(adb_server, adb_serial, "shell",
                f"rm -rf /sys/class/thermal/thermal_zone0 /data/melt-virtual/control"
                f" && ln -s {canary.parent} /sys/class/thermal/thermal_zone0"
                f" && ln -s {canary.parent} /data/melt-virtual/control"
                f" && rm -f /sys/class/power_supply/battery/capacity"
                f" && ln -s {canary} /sys/class/power_supply/battery/capacity && echo planted")
    assert done.stdout.strip() == "planted", done.stdout + done.stderr
    with pytest.raises(OSError):
        virtual_phone.set_temperature(80.0)
    time.sleep(1.0)  # several sysfs refreshes of the model
    assert canary.read_text() == SECRET + "\n"
    assert sorted(p.name for p in canary.parent.iterdir()) == ["canary.txt"]
    # the model keeps running: the truth log still grows
    size = virtual_phone.truth_path.stat().st_size
    time.sleep(0.5)
    assert virtual_phone.truth_path.stat().st_size > size

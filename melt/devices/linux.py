"""Linux boards and NVIDIA Jetsons over SSH.

The same runner, sampler and results as a phone: only the transport differs.
Files are staged content-addressed like on a phone: a manifest in the work
dir maps each staged path to the sha256 and size pushed there, and a file
whose entry matches (and whose size on the board still agrees) is not sent
again. :meth:`LinuxDevice.stream` runs a long command (a build) in the
background and hands its output over line by line while it runs. On a Jetson the power mode (``nvpmodel -q``) and whether
``jetson_clocks`` pins the clocks are part of the device's properties.
"""

from __future__ import annotations

import shlex
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from melt.config.specs import DeviceSpec
from melt.devices.base import Device
from melt.devices.digest import MISMATCH, check_script, mismatch_reason
from melt.errors import CommandTimeout, DeviceUnavailableError, DigestMismatchError, RemoteCommandError
from melt.runner.models import sha256_file
from melt.transports.ssh import SshTransport

MANIFEST = ".melt-manifest"
#: bytes of a streamed command's log read per poll, and the longest line handed on
_STREAM_CHUNK = 1 << 20
_STREAM_LINE = 2000
_STREAM_TAIL = 200

#: one shell call: the sections :meth:`LinuxDevice.properties` reads
_PROBE = r"""
echo '@uname'; uname -srm
echo '@os'; . /etc/os-release 2>/dev/null && echo "$PRETTY_NAME"
echo '@model'; tr -d '\0' < /sys/firmware/devicetree/base/model 2>/dev/null || tr -d '\0' < /proc/device-tree/model 2>/dev/null; echo
echo '@virtual'; [ -e /sys/firmware/devicetree/base/melt,virtual ] && echo 1
echo '@l4t'; head -n 1 /etc/nv_tegra_release 2>/dev/null
echo '@nvpmodel'; nvpmodel -q 2>/dev/null || sudo -n nvpmodel -q 2>/dev/null
echo '@clocks'; jetson_clocks --show 2>/dev/null || sudo -n jetson_clocks --show 2>/dev/null
echo '@cuda'; nvcc --version 2>/dev/null | tail -n 1; cat /usr/local/cuda/version.txt 2>/dev/null
echo '@cpus'; getconf _NPROCESSORS_ONLN
echo '@mem'; grep MemTotal /proc/meminfo
echo '@home'; printf '%s\n' "$HOME"
true
"""


def probe_sections(text: str) -> dict[str, str]:
    """A probe script's output split at its ``@name`` lines: {name: what followed, stripped}."""
    out: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("@") and line[1:].strip().isidentifier():
            current = line[1:].strip()
            out[current] = []
        elif current:
            out[current].append(line)
    return {k: "\n".join(v).strip() for k, v in out.items()}


@dataclass(frozen=True)
class Streamed:
    """How a streamed command ended: its exit status and the last lines it printed."""

    returncode: int
    tail: tuple[str, ...]
    duration_s: float


class LinuxDevice(Device):
    """A Linux board (``kind: linux``) or a Jetson (``kind: jetson``) reached over SSH."""

    transport: SshTransport

    def __init__(self, spec: DeviceSpec, transport: SshTransport):
        super().__init__(spec, transport)
        self.on_push: Callable[[str, int, int], None] | None = None
        self._probe: dict[str, str] | None = None

    @classmethod
    def connect(cls, spec: DeviceSpec) -> "LinuxDevice":
        ssh = spec.ssh
        if ssh is None:
            raise DeviceUnavailableError(f"device {spec.name}: its config needs an `ssh:` section")
        try:
            transport = SshTransport(
                ssh.host, port=ssh.port, user=ssh.user, key_file=ssh.key_file, use_agent=ssh.use_agent,
                password_env=ssh.password_env, jump=ssh.jump.model_dump() if ssh.jump else None,
                connect_timeout_s=ssh.connect_timeout_s, reconnect_timeout_s=ssh.reconnect_timeout_s,
                path=ssh.path, device=spec.name,
            )
        except DeviceUnavailableError as exc:
            if spec.virtual is None:
                raise
            raise DeviceUnavailableError(
                f"{exc} (is the virtual Jetson running? melt virtual start jetson --port {ssh.port} --detach)"
            ) from None
        return cls(spec, transport)

    def reconnect(self) -> None:
        """Open the SSH connection again (after it dropped); raises ``DeviceUnavailableError``."""
        self.transport.reconnect()

    def close(self) -> None:
        self.transport.close()

    # ------------------------------------------------------------ identity

    def probe(self) -> dict[str, str]:
        """The board's identity sections (cached for the life of this object)."""
        if self._probe is None:
            self._probe = probe_sections(self.transport.shell(_PROBE, timeout=30, check=False).stdout)
        return self._probe

    def workdir(self) -> str:
        if self.spec.workdir:
            return self.spec.workdir
        home = self.probe().get("home") or "/tmp"
        return f"{home.rstrip('/')}/melt"

    def abi(self) -> str | None:
        """The board's CPU ABI, from ``uname -m`` (``aarch64`` is ``arm64-v8a``)."""
        from melt.devices.abi import abi_of_machine

        fields = self.probe().get("uname", "").split()
        return abi_of_machine(fields[-1]) if fields else None

    def properties(self) -> dict[str, Any]:
        from melt.parsers.nvpmodel import parse_jetson_clocks_show, parse_nvpmodel_query

        p = self.probe()
        out: dict[str, Any] = {"kind": self.spec.kind, "address": self.transport.address}
        for key in ("model", "os", "uname", "l4t", "cuda"):
            if p.get(key):
                out[key] = p[key].splitlines()[-1].strip() if key == "cuda" else p[key].strip()
        if p.get("cpus", "").isdigit():
            out["cpu_count"] = int(p["cpus"])
        mem = p.get("mem", "").split()
        if len(mem) >= 2 and mem[1].isdigit():
            out["mem_total_bytes"] = int(mem[1]) * 1024
        if p.get("nvpmodel"):
            mode = parse_nvpmodel_query(p["nvpmodel"])
            if mode:
                out["power_mode"] = mode
        if p.get("clocks"):
            clocks = parse_jetson_clocks_show(p["clocks"])
            if "pinned" in clocks:
                out["jetson_clocks"] = "on" if clocks["pinned"] else "off"
        elif self.spec.kind == "jetson":
            out["jetson_clocks"] = None  # needs root: `jetson_clocks --show` did not answer
        out["simulated"] = self.simulated or p.get("virtual") == "1"
        return out

    def health(self) -> dict[str, Any]:
        """The hottest thermal zone and the load average."""
        from melt.devices.state import health_snapshot

        snap = health_snapshot(self.transport, thermal_dir=self.spec.telemetry.thermal_dir)
        temps = [t for t in (snap.get("temps_c") or {}).values() if t is not None and t > -200]
        out: dict[str, Any] = {"temp_c": max(temps) if temps else None,
                               "loadavg": snap.get("loadavg")}
        return {k: v for k, v in out.items() if v is not None}

    # ------------------------------------------------------------- staging

    def _manifest(self) -> dict[str, tuple[str, int]]:
        r = self.transport.shell(f"cat {shlex.quote(self.workdir() + '/' + MANIFEST)} 2>/dev/null", check=False)
        entries: dict[str, tuple[str, int]] = {}
        for line in r.stdout.splitlines():
            parts = line.split("\t")
            if len(parts) == 3 and parts[1].isdigit():
                entries[parts[2]] = (parts[0], int(parts[1]))
        return entries

    def stage(self, local: Path, *, category: str) -> str:
        """Push ``local`` to ``WORKDIR/category/NAME`` unless the same bytes are already there.

        Raises ``DigestMismatchError`` (and removes the file) when the pushed
        file's sha256 on the device is not the local file's.
        """
        q = shlex.quote
        local = Path(local)
        remote = f"{self.workdir()}/{category}/{local.name}"
        digest, size = sha256_file(local), local.stat().st_size
        if self._manifest().get(remote) == (digest, size):
            there = self.transport.shell(f"stat -c %s {q(remote)} 2>/dev/null", check=False).stdout.strip()
            if there == str(size):
                return remote
        mode = 0o755 if category.startswith("bin") else 0o644
        progress = (lambda done, total: self.on_push(local.name, done, total)) if self.on_push else None
        self.transport.push(local, remote, progress=progress, mode=mode)
        manifest = f"{self.workdir()}/{MANIFEST}"
        line = "\t".join([digest, str(size), remote])
        r = self.transport.shell(
            check_script(remote, digest)
            + f" touch {q(manifest)} && grep -v -F {q(chr(9) + remote)} {q(manifest)} > {q(manifest + '.tmp')}; "
            f"printf '%s\\n' {q(line)} >> {q(manifest + '.tmp')} && mv {q(manifest + '.tmp')} {q(manifest)}",
            check=False)
        if r.returncode == MISMATCH:
            raise DigestMismatchError(mismatch_reason(local, remote, digest, r.stdout))
        if r.returncode != 0:
            raise RemoteCommandError(r)
        return remote

    @property
    def bytes_pushed(self) -> int:
        return self.transport.bytes_pushed

    # ------------------------------------------------------------ streaming

    def stream(self, script: str, *, log: str, on_line: Callable[[str], None] | None = None,
               timeout_s: float = 3600.0, poll_s: float = 0.5) -> Streamed:
        """Run ``script`` on the board with its output appended to ``log``, line by line to ``on_line``.

        The command runs in its own session (``setsid``), so a dropped
        connection does not stop it; its stdout and stderr go to the board
        file ``log``, which is read every ``poll_s`` s (at most 1 MiB a read;
        lines cut at 2000 characters). Past ``timeout_s`` s (or when this call
        is interrupted) its process group is killed and ``CommandTimeout``
        raised. Returns its exit status and its last 200 lines.
        """
        q = shlex.quote
        status = f"{log}.{uuid.uuid4().hex[:12]}.status"
        # a subshell, so an `exit` in the script still leaves the status to be written
        inner = f"( {script}\n) >>{q(log)} 2>&1 </dev/null; echo $? >{q(status)}"
        parent = log.rsplit("/", 1)[0] or "/"
        r = self.transport.shell(
            f"mkdir -p {q(parent)} && rm -f {q(status)} && "
            f"setsid sh -c {q(inner)} </dev/null >/dev/null 2>&1 & echo $!", timeout=30)
        try:
            pid = int(r.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise RemoteCommandError(r) from None
        started = time.monotonic()
        offset, pending, tail = 0, "", []
        say = on_line or (lambda line: None)

        def hand_on(lines: list[str]) -> None:
            nonlocal tail
            for line in lines:
                line = line.rstrip("\r")[:_STREAM_LINE]
                tail = (tail + [line])[-_STREAM_TAIL:]
                say(line)

        code: int | None = None
        try:
            while True:
                # the status first: once it is there, the log holds all the command printed
                poll = self.transport.shell(
                    f"s=$(cat {q(status)} 2>/dev/null); z=$(wc -c < {q(log)} 2>/dev/null || echo 0); "
                    f"n=$((z - {offset})); [ $n -gt {_STREAM_CHUNK} ] && n={_STREAM_CHUNK}; [ $n -lt 0 ] && n=0; "
                    f"echo \"@${{s:-run}} $n\"; tail -c +{offset + 1} {q(log)} 2>/dev/null | head -c $n",
                    timeout=60)
                head, _, chunk = poll.stdout.partition("\n")
                fields = head.lstrip("@").split()
                if len(fields) != 2 or not fields[1].isdigit():
                    raise RemoteCommandError(poll)
                offset += int(fields[1])
                lines = (pending + chunk).split("\n")
                pending = lines.pop()
                if len(pending) > _STREAM_LINE:  # a line without an end: hand on what came
                    lines.append(pending)
                    pending = ""
                hand_on(lines)
                if fields[0].lstrip("-").isdigit():
                    code = int(fields[0])
                    if int(fields[1]) < _STREAM_CHUNK:
                        break  # it ended, and everything it printed is read
                    continue
                if time.monotonic() - started > timeout_s:
                    raise CommandTimeout(f"timed out after {timeout_s:g} s on {self.transport.address}: "
                                         f"{script[:200]}")
                time.sleep(poll_s)
        except BaseException:
            if code is None:
                self._kill_group(pid)
            raise
        self.transport.shell(f"rm -f {q(status)}", check=False, timeout=30)
        if pending:
            hand_on([pending])
        return Streamed(code, tuple(tail), round(time.monotonic() - started, 3))

    def _kill_group(self, pid: int) -> None:
        """SIGKILL a streamed command's session (best effort: the board may be gone)."""
        from melt.errors import TransportError

        try:
            self.transport.shell(f"kill -KILL -- -{int(pid)} 2>/dev/null || kill -KILL {int(pid)} 2>/dev/null",
                                 check=False, timeout=15)
        except (TransportError, CommandTimeout):
            pass

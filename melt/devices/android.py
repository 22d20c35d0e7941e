"""Android phones (and melt's virtual phone) over adb.

Files are staged content-addressed: a manifest in the device work dir maps
each staged path to the sha256 and size of what was pushed there, and a file
whose entry matches (and whose size on the device still agrees) is not sent
again. A multi-GB model pushed once costs nothing on the next run.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any, Callable

from melt.config.specs import DeviceSpec
from melt.devices.base import Device
from melt.devices.digest import MISMATCH, check_script, mismatch_reason
from melt.errors import DeviceUnavailableError, DigestMismatchError, RemoteCommandError, TransportError
from melt.models.hashes import remember_sha256, sha256_file
from melt.transports.adb import AdbTransport

DEFAULT_WORKDIR = "/data/local/tmp/melt"
MANIFEST = ".melt-manifest"
_SIZE_MARK = "@melt-size "

#: getprop keys kept as device properties (provenance).
PROPS = {
    "model": "ro.product.model",
    "manufacturer": "ro.product.manufacturer",
    "device": "ro.product.device",
    "android_version": "ro.build.version.release",
    "sdk": "ro.build.version.sdk",
    "fingerprint": "ro.build.fingerprint",
    "soc": "ro.soc.model",
    "board": "ro.board.platform",
    "hardware": "ro.hardware",
    "abi": "ro.product.cpu.abi",
    "virtual": "ro.melt.virtual",
}


class AndroidDevice(Device):
    """A phone reached through an adb server."""

    transport: AdbTransport

    def __init__(self, spec: DeviceSpec, transport: AdbTransport):
        super().__init__(spec, transport)
        self.on_push: Callable[[str, int, int], None] | None = None  # (name, done, total)
        self._props: dict[str, str] | None = None

    @classmethod
    def connect(cls, spec: DeviceSpec) -> "AndroidDevice":
        adb = spec.adb
        if adb is None or not (adb.serial or adb.connect):
            raise DeviceUnavailableError(f"device {spec.name}: its config needs adb.serial or adb.connect")
        try:
            transport = AdbTransport(
                adb.serial or adb.connect,  # type: ignore[arg-type]
                server_host=adb.server_host,
                server_port=adb.server_port,
                connect=adb.connect,
                reconnect_timeout_s=adb.reconnect_timeout_s,
            )
        except DeviceUnavailableError as exc:
            if spec.virtual is None or not adb.connect:
                raise
            port = adb.connect.rsplit(":", 1)[-1]
            raise DeviceUnavailableError(
                f"{exc} (is the virtual phone running? melt virtual start android --port {port} --detach)"
            ) from None
        return cls(spec, transport)

    # ------------------------------------------------------------ identity

    def workdir(self) -> str:
        return self.spec.workdir or DEFAULT_WORKDIR

    def getprop(self) -> dict[str, str]:
        """All system properties (cached for the life of this object)."""
        if self._props is None:
            from melt.parsers.getprop import parse_getprop

            self._props = parse_getprop(self.transport.shell("getprop", timeout=30).stdout)
        return self._props

    def properties(self) -> dict[str, Any]:
        props = self.getprop()
        out: dict[str, Any] = {"kind": "android", "serial": self.transport.serial}
        out.update({k: props[v] for k, v in PROPS.items() if v in props})
        out["simulated"] = self.simulated or props.get("ro.melt.virtual") == "1"
        # melt's virtual phone says when its code runs under qemu-user (not the host CPU)
        out["emulated"] = props.get("ro.melt.emulated") == "1"
        if props.get("ro.melt.emulator"):
            out["emulator"] = props["ro.melt.emulator"]
        return out

    def abi(self) -> str | None:
        """``ro.product.cpu.abi``: the primary ABI, the one a phone's binaries are built for."""
        return self.getprop().get("ro.product.cpu.abi") or None

    def health(self) -> dict[str, Any]:
        """Battery level and temperature, the hottest thermal zone, thermal status."""
        from melt.devices.state import health_snapshot

        snap = health_snapshot(self.transport, thermal_dir=self.spec.telemetry.thermal_dir)
        battery = snap.get("battery") or {}
        temps = [t for t in (snap.get("temps_c") or {}).values() if t is not None]
        out: dict[str, Any] = {
            "battery_pct": battery.get("level_pct", battery.get("capacity_pct")),
            "battery_temp_c": battery.get("temperature_c", battery.get("temp_c")),
            "temp_c": max(temps) if temps else battery.get("temperature_c"),
            "thermal_status": snap.get("thermal_status"),
        }
        return {k: v for k, v in out.items() if v is not None}

    # ------------------------------------------------------------- staging

    def _remote_state(self, remote: str) -> tuple[dict[str, tuple[str, int]], int | None]:
        """The staging manifest and the size of ``remote`` on the device, in one shell."""
        manifest = f"{self.workdir()}/{MANIFEST}"
        r = self.transport.shell(
            f"cat {shlex.quote(manifest)} 2>/dev/null; echo; echo \"{_SIZE_MARK}$(stat -c %s "
            f"{shlex.quote(remote)} 2>/dev/null)\"",
            check=False,
        )
        entries: dict[str, tuple[str, int]] = {}
        size: int | None = None
        for line in r.stdout.splitlines():
            if line.startswith(_SIZE_MARK):
                text = line[len(_SIZE_MARK):].strip()
                size = int(text) if text.isdigit() else None
                continue
            parts = line.split("\t")
            if len(parts) == 3 and parts[1].isdigit():
                entries[parts[2]] = (parts[0], int(parts[1]))
        return entries, size

    def stage(self, local: Path, *, category: str) -> str:
        """Push ``local`` to ``WORKDIR/category/NAME`` unless the same bytes are already there.

        The device's manifest maps each staged path to the sha256 and size of
        what was pushed there. When the manifest and the device's file match
        the local file's sha256 (remembered by path, size and mtime, so a
        model is hashed once per content), nothing is sent. Otherwise the file
        is sent and hashed in the same read; the size that arrived is checked
        and the manifest updated in one more shell. Raises ``TransportError``
        when the device's copy has the wrong size, ``DigestMismatchError`` (and
        removes it) when its sha256 on the device is not that of the bytes sent.
        """
        local = Path(local)
        remote = f"{self.workdir()}/{category}/{local.name}"
        st = local.stat()
        size = st.st_size
        entries, remote_size = self._remote_state(remote)
        known = entries.get(remote)
        digest: str | None = None
        if known is not None and known[1] == size and remote_size == size:
            digest = sha256_file(local)
            if known[0] == digest:
                return remote
        mode = 0o755 if category.startswith("bin") else 0o644
        progress = (lambda done, total: self.on_push(local.name, done, total)) if self.on_push else None
        sent_digest = self.transport.push_hashed(local, remote, progress=progress, mode=mode)
        after = local.stat()
        if (after.st_size, after.st_mtime_ns) != (size, st.st_mtime_ns):
            raise TransportError(f"{local} changed while it was pushed; push it again")
        if digest is None:
            remember_sha256(local, sent_digest)
        digest = sent_digest
        manifest = f"{self.workdir()}/{MANIFEST}"
        line = "\t".join([digest, str(size), remote])
        q = shlex.quote
        # Check the size and the sha256 that arrived (a file that differs is removed, never
        # recorded); drop the old entry for this path, append the new one.
        r = self.transport.shell(
            (f"chmod 755 {q(remote)} && " if mode == 0o755 else "")
            + f"test \"$(stat -c %s {q(remote)})\" = {size} || {{ echo {_SIZE_MARK}$(stat -c %s {q(remote)}); exit 3; }};"
            + check_script(remote, digest)
            + f" touch {q(manifest)} && grep -v -F {q(chr(9) + remote)} {q(manifest)} > {q(manifest + '.tmp')};"
            f" echo {q(line)} >> {q(manifest + '.tmp')} && mv {q(manifest + '.tmp')} {q(manifest)}",
            check=False,
        )
        if r.returncode == 3:
            got = r.stdout.strip().removeprefix(_SIZE_MARK) or "no"
            raise TransportError(f"push {local} -> {remote}: {got} of {size} bytes arrived")
        if r.returncode == MISMATCH:
            raise DigestMismatchError(mismatch_reason(local, remote, digest, r.stdout))
        if r.returncode != 0:
            raise RemoteCommandError(r)
        return remote

    @property
    def bytes_pushed(self) -> int:
        return self.transport.bytes_pushed


def attached_unconfigured(configured_rows: list[dict]) -> list[dict]:
    """Phones the default adb server sees that no device config names."""
    import adbutils
    from adbutils.errors import AdbError

    known = {str((r.get("properties") or {}).get("serial")) for r in configured_rows}
    try:
        client = adbutils.AdbClient(host="127.0.0.1", port=5037, socket_timeout=5)
        listed = client.list()
    except (AdbError, OSError):  # no adb server running: nothing attached
        return []
    return [{"serial": d.serial, "state": d.state} for d in listed if d.serial not in known]

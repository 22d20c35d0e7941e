"""The loopback protocol of melt's virtual iPhone, and its client.

The virtual iPhone (``melt virtual start ios``) serves :class:`IosServices`
on a TCP port of 127.0.0.1, so ``melt run`` in another process reaches it the
way it reaches a real phone through pymobiledevice3: through the same
interface, with no file of the device's opened by name.

One call is one connection:

- request: a JSON line ``{"op": NAME, "args": {...}, "size": N}`` then ``N``
  raw bytes (a pushed file's content; 0 otherwise);
- reply: a JSON line ``{"ok": true, "result": ..., "size": N}`` then ``N``
  raw bytes (a pulled file), or ``{"ok": false, "error": KIND, "message": TEXT}``.

``KIND`` is ``app not installed``, ``device locked`` or ``tunnel missing``
(:data:`melt.transports.ios.NOT_READY`), ``unavailable`` or ``transport``.

What the device sends is not trusted: a reply line is at most
:data:`MAX_LINE` bytes, a pulled file at most the size the caller allows,
texts are cut to :data:`MAX_TEXT` characters.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Mapping, Sequence

from melt.errors import DeviceUnavailableError, TransportError
from melt.transports.ios import NOT_READY

MAX_LINE = 64 * 1024
MAX_TEXT = 400
#: the largest file :meth:`LoopbackIosServices.pull` accepts unless told otherwise (bytes)
MAX_PULL = 64 * 1024 * 1024
CHUNK = 1 << 20


def read_line(stream: BinaryIO, limit: int = MAX_LINE) -> dict[str, Any]:
    """One JSON object from one line of ``stream``; ``ValueError`` when longer than ``limit`` or not JSON."""
    line = stream.readline(limit + 1)
    if not line:
        raise EOFError("connection closed")
    if len(line) > limit or not line.endswith(b"\n"):
        raise ValueError(f"a protocol line longer than {limit} bytes")
    value = json.loads(line)
    if not isinstance(value, dict):
        raise ValueError("a protocol line that is not an object")
    return value


def write_line(stream: BinaryIO, value: Mapping[str, Any]) -> None:
    data = json.dumps(value, separators=(",", ":")).encode() + b"\n"
    if len(data) > MAX_LINE:
        raise ValueError(f"a protocol line longer than {MAX_LINE} bytes")
    stream.write(data)


def copy_exactly(src: BinaryIO, dst: BinaryIO, size: int) -> None:
    """Copy ``size`` bytes; ``EOFError`` when ``src`` ends first."""
    left = size
    while left:
        chunk = src.read(min(CHUNK, left))
        if not chunk:
            raise EOFError(f"connection closed with {left} of {size} bytes to come")
        dst.write(chunk)
        left -= len(chunk)


def _text(value: Any) -> str:
    return str(value)[:MAX_TEXT]


def parse_address(address: str) -> tuple[str, int]:
    """``("127.0.0.1", 15556)`` from ``127.0.0.1:15556``; a loopback address only."""
    host, _, port = address.rpartition(":")
    if host not in ("127.0.0.1", "localhost", "::1", "[::1]") or not port.isdigit():
        raise TransportError(f"a virtual iPhone listens on loopback (127.0.0.1:PORT), not {address!r}")
    return host.strip("[]"), int(port)


class LoopbackIosServices:
    """:class:`~melt.transports.ios.IosServices` of a virtual iPhone at ``address`` (``127.0.0.1:PORT``)."""

    def __init__(self, address: str, *, timeout_s: float = 30.0, max_pull: int = MAX_PULL):
        self.address = address
        self.host, self.port = parse_address(address)
        self.timeout_s = timeout_s
        self.max_pull = max_pull

    # ---------------------------------------------------------------- calls
    def _call(self, op: str, args: Mapping[str, Any], *, upload: Path | None = None,
              download: Path | None = None) -> Any:
        try:
            conn = socket.create_connection((self.host, self.port), timeout=self.timeout_s)
        except OSError as exc:
            raise DeviceUnavailableError(
                f"no virtual iPhone answers at {self.address} ({exc.strerror or exc}): "
                "start it with `melt virtual start ios --detach`") from None
        try:
            with conn, conn.makefile("rwb") as stream:
                size = upload.stat().st_size if upload is not None else 0
                write_line(stream, {"op": op, "args": dict(args), "size": size})
                if upload is not None:
                    with open(upload, "rb") as f:
                        copy_exactly(f, stream, size)
                stream.flush()
                reply = read_line(stream)
                if not reply.get("ok"):
                    kind, message = _text(reply.get("error")), _text(reply.get("message"))
                    if kind in NOT_READY:
                        raise NOT_READY[kind](message)
                    if kind == "unavailable":
                        raise DeviceUnavailableError(message)
                    raise TransportError(message or "the virtual iPhone refused the call")
                body = reply.get("size", 0)
                if not isinstance(body, int) or body < 0:
                    raise TransportError("the virtual iPhone sent a malformed reply")
                if body and download is None:
                    raise TransportError("the virtual iPhone sent data nobody asked for")
                if download is not None:
                    if body > self.max_pull:
                        raise TransportError(f"a file of {body} bytes from the iPhone is over the "
                                             f"{self.max_pull}-byte limit")
                    self._receive(stream, download, body)
                return reply.get("result")
        except (EOFError, ValueError, OSError) as exc:
            raise DeviceUnavailableError(f"virtual iPhone at {self.address}: {exc}") from None

    @staticmethod
    def _receive(stream: BinaryIO, local: Path, size: int) -> None:
        local.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=local.parent, prefix=f".{local.name}.")
        try:
            with os.fdopen(fd, "wb") as f:
                copy_exactly(stream, f, size)
            os.replace(tmp, local)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    # ---------------------------------------------------------------- IosServices
    def list_devices(self) -> list[dict[str, Any]]:
        found = self._call("list_devices", {})
        return [_info(d) for d in (found if isinstance(found, list) else [])[:16]]

    def device_info(self, udid: str) -> dict[str, Any]:
        return _info(self._call("device_info", {"udid": udid}))

    def install(self, udid: str, app: Path) -> None:
        """Sends the bundle's Info.plist: the virtual iPhone runs its own app for the bundle id it names."""
        plist = Path(app) / "Info.plist"
        if not plist.is_file() or plist.stat().st_size > MAX_LINE:
            raise TransportError(f"not an app bundle with an Info.plist: {app}")
        self._call("install", {"udid": udid}, upload=plist)

    def app_installed(self, udid: str, bundle_id: str) -> bool:
        return bool(self._call("app_installed", {"udid": udid, "bundle_id": bundle_id}))

    def launch(self, udid: str, bundle_id: str, args: Sequence[str], env: Mapping[str, str]) -> int:
        pid = self._call("launch", {"udid": udid, "bundle_id": bundle_id, "args": list(args), "env": dict(env)})
        if not isinstance(pid, int) or isinstance(pid, bool):
            raise TransportError("the virtual iPhone sent no pid for the launch")
        return pid

    def is_running(self, udid: str, pid: int) -> bool:
        return bool(self._call("is_running", {"udid": udid, "pid": pid}))

    def kill(self, udid: str, pid: int) -> None:
        self._call("kill", {"udid": udid, "pid": pid})

    def push(self, udid: str, bundle_id: str, local: Path, remote: str) -> None:
        self._call("push", {"udid": udid, "bundle_id": bundle_id, "remote": remote}, upload=Path(local))

    def pull(self, udid: str, bundle_id: str, remote: str, local: Path) -> None:
        self._call("pull", {"udid": udid, "bundle_id": bundle_id, "remote": remote}, download=Path(local))

    def exists(self, udid: str, bundle_id: str, remote: str) -> bool:
        return bool(self._call("exists", {"udid": udid, "bundle_id": bundle_id, "remote": remote}))

    def process_sample(self, udid: str, pid: int) -> dict[str, Any] | None:
        sample = self._call("process_sample", {"udid": udid, "pid": pid})
        if not isinstance(sample, dict):
            return None
        out = {k: float(v) for k, v in sample.items()
               if k in ("energy_impact", "cpu_pct") and isinstance(v, (int, float)) and not isinstance(v, bool)
               and v == v and abs(v) < 1e12}
        return out or None


def _info(value: Any) -> dict[str, Any]:
    """The device-info fields melt knows, as short texts (and ``simulated`` as a flag)."""
    if not isinstance(value, dict):
        raise TransportError("the virtual iPhone sent malformed device info")
    out: dict[str, Any] = {k: _text(value[k]) for k in ("udid", "name", "product_type", "ios_version", "build")
                           if value.get(k) is not None}
    if "simulated" in value:
        out["simulated"] = bool(value["simulated"])
    return out

"""The virtual iPhone on loopback: :class:`IphoneDevice` served over melt's iOS wire protocol.

``run_iphone`` (what ``melt virtual start ios`` and ``python -m melt.virtual
iphone`` run) keeps the device's storage in ``STATE_DIR/phone-PORT/root``
(apps' containers survive a restart, as a phone's do), serves
:class:`~melt.transports.ios.IosServices` on ``127.0.0.1:PORT``
(:mod:`melt.transports.ios_wire`), prints the address once it listens and
runs until SIGTERM. A device config reaches it with ``ios: {virtual:
127.0.0.1:PORT}``.

What a client sends is checked here as on a phone: paths stay inside the
app's container, a pushed file is bounded, a request line is bounded.
"""

from __future__ import annotations

import logging
import os
import signal
import socketserver
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from melt.errors import DeviceUnavailableError, MeltError, TransportError
from melt.transports.ios import IosNotReady
from melt.transports.ios_wire import copy_exactly, read_line, write_line
from melt.virtual.iphone_config import VirtualIphoneConfig, load_iphone_config
from melt.virtual.iphone_device import MAX_FILE, IphoneDevice
from melt.virtual.phone import VirtualPhone
from melt.virtual.registry import PhoneRecord, phone_dir, remove_record, write_record

log = logging.getLogger(__name__)

#: calls and the arguments each takes (anything else is refused)
OPS = {
    "list_devices": (), "device_info": ("udid",), "install": ("udid",),
    "app_installed": ("udid", "bundle_id"), "launch": ("udid", "bundle_id", "args", "env"),
    "is_running": ("udid", "pid"), "kill": ("udid", "pid"),
    "push": ("udid", "bundle_id", "remote"), "pull": ("udid", "bundle_id", "remote"),
    "exists": ("udid", "bundle_id", "remote"), "process_sample": ("udid", "pid"),
}


class _Handler(socketserver.StreamRequestHandler):
    server: "IphoneServer"

    def handle(self) -> None:
        try:
            request = read_line(self.rfile)
            op, args, size = request.get("op"), request.get("args"), request.get("size", 0)
            if op not in OPS or not isinstance(args, dict) or set(args) - set(OPS[op]) \
                    or not isinstance(size, int) or not 0 <= size <= MAX_FILE:
                raise TransportError(f"the virtual iPhone does not serve {str(op)[:40]!r} so")
            self._serve(op, args, size)
        except IosNotReady as exc:
            self._error(exc.reason, exc.detail)
        except DeviceUnavailableError as exc:
            self._error("unavailable", str(exc))
        except MeltError as exc:
            self._error("transport", str(exc))
        except (EOFError, ValueError, TypeError, OSError) as exc:
            self._error("transport", f"malformed request: {exc}")

    def _error(self, kind: str, message: str) -> None:
        try:
            write_line(self.wfile, {"ok": False, "error": kind, "message": message[:400]})
        except OSError:
            pass

    def _serve(self, op: str, args: dict[str, Any], size: int) -> None:
        device = self.server.device
        if op in ("push", "install"):
            with tempfile.TemporaryDirectory(dir=device.root) as tmp:
                local = Path(tmp) / "upload"
                with open(local, "wb") as f:
                    copy_exactly(self.rfile, f, size)
                if op == "push":
                    device.push(args["udid"], args["bundle_id"], local, str(args["remote"]))
                else:
                    device.install(args["udid"], local)
            write_line(self.wfile, {"ok": True, "result": None, "size": 0})
            return
        if op == "pull":
            device.device_info(args["udid"])
            f, length = device.open_file(args["bundle_id"], str(args["remote"]))
            with f:
                write_line(self.wfile, {"ok": True, "result": None, "size": length})
                copy_exactly(f, self.wfile, length)
            return
        if op == "launch":
            if not isinstance(args.get("args"), list) or not isinstance(args.get("env"), dict):
                raise TransportError("launch: args must be a list and env a mapping")
        if op in ("is_running", "kill", "process_sample") and not isinstance(args.get("pid"), int):
            raise TransportError(f"{op}: pid must be an integer")
        result = getattr(device, op)(**args)
        write_line(self.wfile, {"ok": True, "result": result, "size": 0})


class IphoneServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, device: IphoneDevice | None, host: str, port: int):
        self.device = device
        super().__init__((host, port), _Handler)


def run_iphone(config: VirtualIphoneConfig, *, host: str = "127.0.0.1", port: int = 0, state_dir: Path,
               on_ready=lambda address: None) -> None:  # noqa: ANN001
    """Run a virtual iPhone in this process until SIGTERM or SIGINT."""
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise MeltError(f"a virtual iPhone listens on loopback only, not {host}")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: stop.set())
    server = IphoneServer(None, host, port)
    port = server.server_address[1]
    folder = phone_dir(state_dir, port)
    folder.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(folder / "iphone.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger("melt.virtual").addHandler(handler)
    logging.getLogger("melt.virtual").setLevel(logging.INFO)
    server.device = IphoneDevice(config, folder / "root")
    server.device.tools()  # the app's llama.cpp build, found (or built) before the phone says it is up
    server.device.start()
    address = f"{host}:{port}"
    record = PhoneRecord(address=address, port=port, pid=os.getpid(), started_at=time.time(),
                         root=str(folder / "root"), truth_log="", isolation="none", kind="ios",
                         abi="arm64-v8a", emulation="host")
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        write_record(record, state_dir)
        on_ready(address)
        while not stop.wait(0.2):
            pass
    finally:
        remove_record(state_dir, port, os.getpid())
        server.shutdown()
        server.server_close()
        server.device.stop()


class VirtualIphone(VirtualPhone):
    """A virtual iPhone in a child process (see the module doc)::

        with VirtualIphone(port=0, state_dir=tmp) as phone:
            phone.address            # "127.0.0.1:40123": ios: {virtual: ...} in a device config
            phone.lock(True)         # launches fail as on a locked phone
            phone.set_thermal("serious")
    """

    serve_command = "iphone"
    label = "virtual iPhone"

    def __init__(self, config: VirtualIphoneConfig | str | Path | None = None, *, port: int = 0,
                 host: str = "127.0.0.1", state_dir: str | Path | None = None):
        if config is None or isinstance(config, (str, Path)):
            config = load_iphone_config(config)
        super().__init__(config, port=port, host=host, state_dir=state_dir)  # type: ignore[arg-type]

    def _control(self, name: str, value: str) -> None:
        folder = self.root / "control"
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{name}.tmp"
        tmp.write_text(value)
        os.replace(tmp, folder / name)

    def lock(self, locked: bool = True) -> None:
        """Lock the phone (launches fail) or unlock it."""
        self._control("lock", "on" if locked else "off")

    def set_tunnel(self, up: bool) -> None:
        """Bring the host's RemoteXPC tunnel to it up or down."""
        self._control("tunnel", "on" if up else "off")

    def set_thermal(self, state: str | float) -> None:
        """Heat it to a thermal state (``serious`` ...) or a heat value (K); it then cools by itself."""
        self._control("thermal", str(state))

    def uninstall(self, bundle_id: str) -> None:
        """Delete an app and its container."""
        self._control("uninstall", bundle_id)

    def container(self, bundle_id: str = "org.melt.bench") -> Path:
        """The host folder of an app's Documents."""
        return self.root / "containers" / bundle_id / "Documents"

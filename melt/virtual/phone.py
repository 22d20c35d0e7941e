"""``VirtualPhone``: start, stop, heat and throttle a virtual phone from Python.

The phone runs in its own process (``python -m melt.virtual serve``) so that
its CPU accounting covers exactly what its shells run, and so that killing it
behaves like a phone dropping off the bus::

    with VirtualPhone(port=0, state_dir=tmp) as phone:
        phone.address                       # "127.0.0.1:40123" for `adb connect`
        phone.set_temperature(60)           # inject heat (degC, die and body)
        phone.force_throttle(True)          # or False, or None for automatic
        phone.read_truth()                  # pandas DataFrame of the truth log
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from melt.errors import MeltError
from melt.virtual.config import VirtualPhoneConfig, load_config
from melt.virtual.registry import PhoneRecord, default_state_dir, phone_dir
from melt.virtual.runtime import check_port
from melt.virtual.sandbox import Sandbox
from melt.virtual.simulator import TRUTH_DEVICE_PATH


def send_control(record: PhoneRecord, name: str, value: str) -> None:
    """Write a control file (``temperature``, ``throttle``, ``charger``) of a running phone."""
    sandbox = Sandbox(Path(record.root))
    sandbox.write(sandbox.state_path("control", name), value)


class VirtualPhoneError(MeltError):
    """A virtual phone could not start, or is not running."""


class VirtualPhone:
    """A virtual Android phone in a child process, reachable with ``adb connect``."""

    serve_command = "serve"  # the ``python -m melt.virtual`` subcommand that runs it
    label = "virtual phone"

    def __init__(
        self,
        config: VirtualPhoneConfig | str | Path | None = None,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        state_dir: str | Path | None = None,
        unisolated: bool = False,
    ):
        """``config``: parsed config, a device-config YAML path, or None for defaults.

        ``port=0`` picks a free port at the first start; restarts reuse it.
        ``unisolated`` lets it run without bubblewrap (its commands then run
        on this host); otherwise starting without a working bwrap fails.
        """
        if isinstance(config, (str, Path)):
            config = load_config(config)
        self.config = config or VirtualPhoneConfig()
        self.host = host
        self.port = port
        self.state_dir = Path(state_dir) if state_dir else default_state_dir()
        self.unisolated = unisolated
        self.process: subprocess.Popen[bytes] | None = None

    # ------------------------------------------------------------- lifecycle
    @property
    def address(self) -> str:
        """``host:port`` to give ``adb connect`` (the adb serial)."""
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 30.0) -> str:
        """Start the phone process; returns its address once it listens.

        Raises :class:`VirtualPhoneError` if it exits or stays silent past ``timeout`` s.
        """
        if self.running:
            return self.address
        check_port(self.port)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        config_file = self.state_dir / f"config-{os.getpid()}-{id(self)}.yaml"
        config_file.write_text(yaml.safe_dump({"virtual": self.config.model_dump(mode="json")}))
        cmd = [sys.executable, "-m", "melt.virtual", self.serve_command, "--host", self.host,
               "--port", str(self.port), "--config", str(config_file),
               "--state-dir", str(self.state_dir)] + (["--unisolated"] if self.unisolated else [])
        err_file = config_file.with_suffix(".err")
        with open(err_file, "wb") as err:
            self.process = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
                start_new_session=True,
            )
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        line = self.process.stdout.readline().decode().strip() if ready else ""
        config_file.unlink(missing_ok=True)
        if not line:
            self.kill()
            message = err_file.read_text(errors="replace").strip().removeprefix("Error: ")
            err_file.unlink(missing_ok=True)
            raise VirtualPhoneError(f"{self.label} did not start: {message or 'no answer'}")
        self.port = int(line.rpartition(":")[2])
        os.replace(err_file, phone_dir(self.state_dir, self.port) / "stderr.log")
        return self.address

    def stop(self, timeout: float = 10.0) -> None:
        """Stop gracefully (SIGTERM), killing it after ``timeout`` s."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._close_pipes()

    def kill(self) -> None:
        """Kill the phone at once (SIGKILL), as if it crashed or was unplugged."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._close_pipes()

    def restart(self, timeout: float = 30.0) -> str:
        """Stop (if running) and start again on the same port, keeping its files."""
        self.stop()
        return self.start(timeout)

    def _close_pipes(self) -> None:
        if self.process is not None:
            if self.process.stdout is not None:
                self.process.stdout.close()

    def __enter__(self) -> "VirtualPhone":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------- files
    @property
    def root(self) -> Path:
        """The phone's sandbox folder on the host."""
        return phone_dir(self.state_dir, self.port) / "root"

    def host_path(self, device_path: str) -> Path:
        """Where ``device_path`` lives on the host (``/data/local/tmp/x`` ...)."""
        return Sandbox(self.root).host_path(device_path)

    @property
    def truth_path(self) -> Path:
        """Host path of the truth log (``/data/melt-virtual/truth.csv`` on the device)."""
        return self.host_path(TRUTH_DEVICE_PATH)

    def read_truth(self):  # -> pandas.DataFrame
        """The truth log so far as a DataFrame (see :mod:`melt.virtual.simulator`)."""
        import pandas as pd

        return pd.read_csv(self.truth_path).dropna()

    def energy_between(self, t0: float, t1: float, clock: str = "boottime_s") -> float:
        """True energy (J) drawn between two device times (s) on ``clock``, interpolated."""
        import numpy as np

        df = self.read_truth()
        return float(np.interp(t1, df[clock], df["energy_j"]) - np.interp(t0, df[clock], df["energy_j"]))

    # ------------------------------------------------------------- controls
    def _control(self, name: str, value: str) -> None:
        sandbox = Sandbox(self.root)
        sandbox.write(sandbox.state_path("control", name), value)

    def set_temperature(self, celsius: float, node: str = "all") -> None:
        """Inject heat: set the die (``soc``), body (``body``) or both (``all``) to ``celsius``."""
        if node not in ("soc", "body", "all"):
            raise ValueError("node must be soc, body or all")
        self._control("temperature", f"{node}={celsius}")

    def force_throttle(self, on: bool | None) -> None:
        """Force throttling on (True) or off (False); None returns to automatic."""
        self._control("throttle", {True: "on", False: "off", None: "auto"}[on])

    def plug_charger(self, plugged: bool) -> None:
        """Plug a charger in (True) or pull it (False)."""
        self._control("charger", "1" if plugged else "0")

    def wait_for_file(self, device_path: str, timeout: float = 5.0) -> str:
        """Contents of a device file once it exists (for tests); raises on timeout."""
        path = self.host_path(device_path)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                return path.read_text()
            except OSError:
                time.sleep(0.05)
        raise VirtualPhoneError(f"{device_path} did not appear within {timeout} s")

"""An iPhone: a spec plus an :class:`~melt.transports.ios.IosTransport`.

melt's benchmark host app (``frameworks/llama.cpp/ios/``) is the only thing
that runs on the phone. Its contract, which :meth:`IosDevice.run_app` relies on:

- launched with ``--melt-out DIR [--melt-tool NAME] -- ARGS...``, it runs
  ``NAME`` (``llama-bench``, the default, or ``llama-completion``) with
  ``ARGS`` (paths relative to Documents),
- writes ``DIR/stdout.txt``, ``DIR/stderr.txt`` and ``DIR/thermal.txt``
  (``start STATE`` and ``end STATE``: ProcessInfo's thermal state before and
  after), and ``DIR/exit_code`` last, inside its Documents folder, then exits;
- launched with ``--melt-out DIR --melt-thermal``, it writes only
  ``DIR/thermal.txt`` (``now STATE``) and ``DIR/exit_code``.

Files melt stages (models) go to ``Documents/melt/<category>/<sha256
prefix>-<name>``, each with a ``.done`` marker written after it: a file is
sent once per content.

What the phone hands back is not trusted: each output file is pulled only up
to :data:`MAX_OUTPUT` bytes and a thermal state is one of iOS's four names.
"""

from __future__ import annotations

import math
import re
import secrets
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from melt.config.specs import DeviceSpec, IosSpec
from melt.devices.base import Device
from melt.errors import CommandTimeout, TransportError
from melt.hashing import file_sha256
from melt.transports.ios import AppNotInstalled, IosServices, IosTransport, Pymobiledevice3Services

ENERGY_NOTE = "iOS energy impact: the system's unitless estimate, not joules"
#: iOS's thermal states (ProcessInfo.ThermalState), coolest first
THERMAL_STATES = ("nominal", "fair", "serious", "critical")
#: the largest output file melt pulls from the app (bytes)
MAX_OUTPUT = 32 * 1024 * 1024
#: the tools the benchmark app runs
APP_TOOLS = ("llama-bench", "llama-completion")


@dataclass
class AppRun:
    """What one launch of the benchmark app left behind."""

    stdout: str
    stderr: str
    returncode: int
    duration_s: float
    samples: list[dict[str, Any]] = field(default_factory=list)  # process samples, with `t_s`
    thermal: dict[str, str] = field(default_factory=dict)  # "start" / "end" -> thermal state


class IosDevice(Device):
    """An iPhone reached through pymobiledevice3 (or any :class:`IosServices`)."""

    transport: IosTransport

    @classmethod
    def connect(cls, spec: DeviceSpec) -> "IosDevice":
        """Open the iPhone named by ``spec.ios`` (a virtual one at ``ios.virtual``; else
        ``ios.udid``, or the only one attached when unset)."""
        ios = spec.ios or IosSpec()
        services: IosServices
        if ios.virtual:
            from melt.transports.ios_wire import LoopbackIosServices

            services = LoopbackIosServices(ios.virtual)
        else:
            services = Pymobiledevice3Services()
        udid = ios.udid
        if udid is None:
            found = [d for d in services.list_devices() if d.get("udid")]
            if len(found) != 1:
                raise TransportError(f"{spec.name}: {len(found)} iPhones attached; set ios.udid to pick one")
            udid = found[0]["udid"]
        return cls(spec, IosTransport(services, udid, ios.bundle_id))

    def workdir(self) -> str:
        return "melt"

    def properties(self) -> dict[str, Any]:
        info = self.transport.services.device_info(self.transport.udid)
        return {"platform": "ios", "udid": self.transport.udid, "model": info.get("product_type"),
                "name": info.get("name"), "os": f"iOS {info.get('ios_version')}", "build": info.get("build"),
                "bundle_id": self.transport.bundle_id, "energy": ENERGY_NOTE,
                # a virtual iPhone says so itself, not only its config
                "simulated": bool(self.simulated or info.get("simulated"))}

    def prepare_app(self) -> dict[str, Any]:
        """Make sure melt's app is on the phone (installing ``ios.app`` when given); its provenance.

        The framework runs inside the app: nothing is built or pushed for it.
        Raises :class:`~melt.transports.ios.AppNotInstalled` when it is missing and no bundle is given.
        """
        t = self.transport
        app = (self.spec.ios or IosSpec()).app
        if app:
            t.install(Path(app).expanduser())
        if not t.services.app_installed(t.udid, t.bundle_id):
            raise AppNotInstalled(f"app {t.bundle_id} is not installed on {self.name}: build it "
                                  "(frameworks/llama.cpp/ios) and set ios.app, or install it with Xcode")
        return {"app": t.bundle_id, "binaries": "inside the app", "tools": list(APP_TOOLS),
                **({"app_bundle": str(app)} if app else {})}

    def stage(self, local: Path, *, category: str) -> str:
        """Push ``local`` into the app's Documents unless the same content is there already."""
        local = Path(local)
        digest = file_sha256(local)
        remote = f"{self.workdir()}/{category}/{digest[:16]}-{local.name}"
        done = f"{remote}.done"
        if not self.transport.exists(done):
            self.transport.push(local, remote)
            with tempfile.TemporaryDirectory() as tmp:  # written last: a broken push is sent again
                empty = Path(tmp) / "done"
                empty.write_bytes(b"")
                self.transport.push(empty, done)
        return remote

    def thermal_state(self, *, timeout_s: float = 60.0) -> str | None:
        """iOS's thermal state now (``nominal`` ... ``critical``), read by the app; ``None`` if unknown."""
        out_dir = f"melt/out/thermal-{secrets.token_hex(6)}"
        run = self._launch(["--melt-out", out_dir, "--melt-thermal"], out_dir, timeout_s, None)
        return run.thermal.get("now")

    def run_app(self, args: list[str], *, out_dir: str, tool: str = "llama-bench", timeout_s: float = 600.0,
                sample_every_s: float | None = 1.0) -> AppRun:
        """Launch the benchmark app running ``tool`` with ``args``; wait for its ``exit_code``; pull its output.

        ``sample_every_s=None`` takes no process samples. Raises
        :class:`CommandTimeout` (after stopping the app) past ``timeout_s``.
        """
        if tool not in APP_TOOLS:
            raise TransportError(f"the benchmark app runs {', '.join(APP_TOOLS)}, not {tool}")
        argv = ["--melt-out", out_dir] + (["--melt-tool", tool] if tool != "llama-bench" else []) + ["--", *args]
        return self._launch(argv, out_dir, timeout_s, sample_every_s)

    def _launch(self, argv: list[str], out_dir: str, timeout_s: float, sample_every_s: float | None) -> AppRun:
        t = self.transport
        if t.exists(f"{out_dir}/exit_code"):  # an old run's files would be read as this one's
            raise TransportError(f"{out_dir} in the app's Documents holds an earlier run: pick a new folder")
        started = time.monotonic()
        process = t.start(argv)
        samples: list[dict[str, Any]] = []
        done = f"{out_dir}/exit_code"
        while not t.exists(done):
            elapsed = time.monotonic() - started
            if elapsed > timeout_s:
                process.kill()
                raise CommandTimeout(f"benchmark app still running after {timeout_s:g} s")
            sample = t.services.process_sample(t.udid, process.pid) if sample_every_s else None
            if sample:  # in ms, rounded down: a sample's time is never past the run's end
                samples.append({"t_s": math.floor(elapsed * 1000) / 1000, **sample})
            # a sample may itself take a while (DVT's instrument samples over an interval): sleep the rest
            busy = time.monotonic() - started - elapsed
            time.sleep(max(0.0, (sample_every_s or 0.2) - busy))
        duration = time.monotonic() - started
        texts = {name: self._pull_text(f"{out_dir}/{name}")
                 for name in ("stdout.txt", "stderr.txt", "exit_code", "thermal.txt")}
        try:
            code = int(texts["exit_code"].strip()[:12])
        except ValueError:
            code = -1
        return AppRun(texts["stdout.txt"], texts["stderr.txt"], code, duration, samples,
                      parse_thermal(texts["thermal.txt"]))

    def _pull_text(self, remote: str) -> str:
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / "f"
            try:
                self.transport.pull(remote, local)
            except TransportError:
                return ""
            with open(local, "rb") as f:
                data = f.read(MAX_OUTPUT + 1)
        if len(data) > MAX_OUTPUT:
            raise TransportError(f"{remote} from the app is over {MAX_OUTPUT} bytes")
        return data.decode(errors="replace")

    def execute_plain(self, invocation: Any) -> Any:
        """Run an invocation through the app without samples (a warm-up): an
        :class:`~melt.runner.execute.Execution`-shaped result."""
        from melt.runner.ios_executor import run_invocation

        return run_invocation(self, invocation, sample=False)


def parse_thermal(text: str) -> dict[str, str]:
    """``{"start": "nominal", "end": "fair"}`` from the app's ``thermal.txt``; unknown words are left out."""
    out: dict[str, str] = {}
    for line in text.splitlines()[:8]:
        m = re.fullmatch(r"(start|end|now) (\w+)", line.strip())
        if m and m.group(2) in THERMAL_STATES:
            out[m.group(1)] = m.group(2)
    return out


def energy_impact_metrics(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """``energy_impact_mean`` / ``_max`` from app samples (unitless, labelled; never joules)."""
    values = [float(s["energy_impact"]) for s in samples if isinstance(s.get("energy_impact"), (int, float))]
    if not values:
        return {}
    return {"energy_impact_mean": sum(values) / len(values), "energy_impact_max": max(values),
            "energy_impact_note": ENERGY_NOTE}


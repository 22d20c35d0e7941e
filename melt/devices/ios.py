"""An iPhone: a spec plus an :class:`~melt.transports.ios.IosTransport`.

melt's benchmark host app (``frameworks/llama.cpp/ios/``) is the only thing
that runs on the phone. Its contract, which :meth:`IosDevice.run_app` relies on:

- launched with ``--melt-out DIR -- ARGS...``, it runs the benchmark with
  ``ARGS`` (llama-bench's own arguments; paths relative to Documents),
- writes ``DIR/stdout.txt`` and ``DIR/stderr.txt``, and ``DIR/exit_code``
  last, inside its Documents folder, then exits.

Files melt stages (models) go to ``Documents/melt/<category>/<name>``.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from melt.config.specs import DeviceSpec, IosSpec
from melt.devices.base import Device
from melt.errors import CommandTimeout, TransportError
from melt.hashing import file_sha256
from melt.transports.ios import IosTransport, Pymobiledevice3Services

ENERGY_NOTE = "iOS energy impact: the system's unitless estimate, not joules"


@dataclass
class AppRun:
    """What one launch of the benchmark app left behind."""

    stdout: str
    stderr: str
    returncode: int
    duration_s: float
    samples: list[dict[str, Any]] = field(default_factory=list)  # process samples, with `t_s`


class IosDevice(Device):
    """An iPhone reached through pymobiledevice3 (or any :class:`IosServices`)."""

    transport: IosTransport

    @classmethod
    def connect(cls, spec: DeviceSpec) -> "IosDevice":
        """Open the iPhone named by ``spec.ios.udid`` (the only one attached when unset)."""
        services = Pymobiledevice3Services()
        ios = spec.ios or IosSpec()
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
                "simulated": self.simulated}

    def stage(self, local: Path, *, category: str) -> str:
        """Push ``local`` into the app's Documents unless a file of the same sha256 is recorded there."""
        local = Path(local)
        remote = f"{self.workdir()}/{category}/{local.name}"
        digest = file_sha256(local)
        marker = f"{remote}.sha256-{digest[:16]}"
        if not (self.transport.exists(remote) and self.transport.exists(marker)):
            self.transport.push(local, remote)
            with tempfile.TemporaryDirectory() as tmp:
                empty = Path(tmp) / "marker"
                empty.write_bytes(b"")
                self.transport.push(empty, marker)
        return remote

    def run_app(self, args: list[str], *, out_dir: str, timeout_s: float = 600.0,
                sample_every_s: float = 1.0) -> AppRun:
        """Launch the benchmark app with ``args``; wait for its ``exit_code`` file; pull its output.

        Raises :class:`CommandTimeout` (after stopping the app) past ``timeout_s``.
        """
        t = self.transport
        started = time.monotonic()
        process = t.start(["--melt-out", out_dir, "--", *args])
        samples: list[dict[str, Any]] = []
        done = f"{out_dir}/exit_code"
        while not t.exists(done):
            elapsed = time.monotonic() - started
            if elapsed > timeout_s:
                process.kill()
                raise CommandTimeout(f"benchmark app still running after {timeout_s:g} s")
            sample = t.services.process_sample(t.udid, process.pid)
            if sample:
                samples.append({"t_s": round(elapsed, 3), **sample})
            time.sleep(sample_every_s if sample is None else max(0.0, sample_every_s - 0.05))
        duration = time.monotonic() - started
        with tempfile.TemporaryDirectory() as tmp:
            texts = {}
            for name in ("stdout.txt", "stderr.txt", "exit_code"):
                local = Path(tmp) / name
                try:
                    t.pull(f"{out_dir}/{name}", local)
                    texts[name] = local.read_text(errors="replace")
                except TransportError:
                    texts[name] = ""
        try:
            code = int(texts["exit_code"].strip())
        except ValueError:
            code = -1
        return AppRun(texts["stdout.txt"], texts["stderr.txt"], code, duration, samples)


def energy_impact_metrics(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """``energy_impact_mean`` / ``_max`` from app samples (unitless, labelled; never joules)."""
    values = [float(s["energy_impact"]) for s in samples if isinstance(s.get("energy_impact"), (int, float))]
    if not values:
        return {}
    return {"energy_impact_mean": sum(values) / len(values), "energy_impact_max": max(values),
            "energy_impact_note": ENERGY_NOTE}


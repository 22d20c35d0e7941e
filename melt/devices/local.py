"""This machine as a device."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

from melt.devices.abi import host_abi
from melt.devices.base import Device
from melt.store.paths import cache_dir


def cpu_model() -> str | None:
    """The CPU's model name from /proc/cpuinfo (or the platform), if known."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


class LocalDevice(Device):
    """Runs jobs on the machine melt runs on; files stay where they are."""

    def workdir(self) -> str:
        wd = self.spec.workdir or str(cache_dir() / "work" / self.spec.name)
        Path(wd).expanduser().mkdir(parents=True, exist_ok=True)
        return str(Path(wd).expanduser())

    def properties(self) -> dict[str, Any]:
        uname = platform.uname()
        return {
            "kind": "local",
            "hostname": uname.node,
            "os": f"{uname.system} {uname.release}",
            "machine": uname.machine,
            "abi": host_abi(),
            "cpu_model": cpu_model(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "simulated": self.simulated,
        }

    def abi(self) -> str:
        return host_abi()

    def stage(self, local: Path, *, category: str) -> str:
        return str(Path(local).resolve())

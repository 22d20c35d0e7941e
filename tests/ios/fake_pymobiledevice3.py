"""A fake of the parts of pymobiledevice3 melt calls, one layer below melt's services.

With it, melt's own :class:`melt.transports.ios.Pymobiledevice3Services`
runs unchanged: it lists phones through ``usbmux.list_devices``, reads their
lockdown values and samples energy through DVT's ``EnergyMonitor``. What the
fake hands back is raw: the lockdown values are the ``Value`` of a GetValue
reply read from a plist file, and an energy sample is a DVT-shaped mapping of
*every* monitored process (keyed by integer pid) to its counters, computed
from those processes' real CPU time over the sample. Mapping the keys and
picking the asked process out is melt's work, which the tests check.

:meth:`FakeLibrary.install` puts the modules into ``sys.modules`` through
pytest's ``monkeypatch``, so they are gone after the test.
"""

from __future__ import annotations

import asyncio
import os
import plistlib
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pid: int) -> int | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return None


@dataclass
class FakePhone:
    """One phone on the fake usbmux: its lockdown reply, and what it allows."""

    reply: Path  # a lockdown GetValue reply (plist)
    locked: bool = False  # lockdown refuses a session (locked or not paired)
    developer_image: bool = True  # DVT instruments are there
    sample_s: float = 0.3  # the energy monitor's sampling interval
    others: list[int] = field(default_factory=list)  # further processes every sample reports, first
    tunnel: bool = True  # tunneld keeps a RemoteXPC tunnel to it (iOS 17+ reach DVT only so)
    screen_locked: bool = False  # paired, but DVT refuses to launch an app until it is unlocked

    @property
    def values(self) -> dict[str, Any]:
        return plistlib.loads(self.reply.read_bytes())["Value"]

    @property
    def udid(self) -> str:
        return self.values["UniqueDeviceID"]


class FakeLibrary:
    """The modules, answering for ``phones``."""

    def __init__(self, phones: list[FakePhone]):
        self.phones = phones

    def _phone(self, serial: str) -> FakePhone:
        for phone in self.phones:
            if phone.udid == serial:
                return phone
        raise ConnectionError(f"no device {serial} on usbmux")

    def install(self, monkeypatch: Any) -> None:
        """Make ``import pymobiledevice3...`` find this fake for the rest of the test."""
        lib = self

        async def list_devices() -> list[Any]:
            return [types.SimpleNamespace(serial=p.udid, connection_type="USB") for p in lib.phones]

        async def create_using_usbmux(serial: str | None = None, **_: Any) -> Any:
            phone = lib._phone(serial or lib.phones[0].udid)
            if phone.locked:
                raise RuntimeError("PasswordProtected")
            return types.SimpleNamespace(phone=phone, all_values=phone.values)

        def get_tunneld_device_by_udid(udid: str) -> Any:
            phone = lib._phone(udid)  # an RSD over the tunnel: the same phone, reached another way
            return types.SimpleNamespace(phone=phone, udid=udid) if phone.tunnel else None

        class DvtProvider:
            def __init__(self, lockdown: Any):
                self.phone = lockdown.phone

            async def __aenter__(self) -> "DvtProvider":
                if not self.phone.developer_image:
                    raise RuntimeError("InvalidServiceError: com.apple.instruments.remoteserver")
                return self

            async def __aexit__(self, *exc: Any) -> None:
                return None

        class PasswordRequiredError(Exception):
            """pymobiledevice3.exceptions' name for a phone that wants its passcode first."""

        class ProcessControl:
            def __init__(self, dvt: DvtProvider):
                self.phone = dvt.phone

            async def __aenter__(self) -> "ProcessControl":
                return self

            async def __aexit__(self, *exc: Any) -> None:
                return None

            async def launch(self, bundle_id: str, arguments: list[str], environment: dict[str, str]) -> int:
                if self.phone.screen_locked:
                    raise PasswordRequiredError("device is locked")
                return 4242

        class EnergyMonitor:
            def __init__(self, dvt: DvtProvider, pids: list[int]):
                self.phone, self.pids = dvt.phone, [*dvt.phone.others, *pids]

            async def __aenter__(self) -> "EnergyMonitor":
                return self

            async def __aexit__(self, *exc: Any) -> None:
                return None

            def __aiter__(self) -> "EnergyMonitor":
                return self

            async def __anext__(self) -> dict[int, dict[str, float]]:
                before = {pid: cpu_ticks(pid) for pid in self.pids}
                await asyncio.sleep(self.phone.sample_s)
                sample = {}
                for pid, t0 in before.items():
                    t1 = cpu_ticks(pid)
                    if t0 is None or t1 is None:
                        continue
                    cpu_pct = 100.0 * (t1 - t0) / CLK_TCK / self.phone.sample_s
                    # the cost is the OS's unitless score; here it follows CPU use
                    sample[pid] = {"energy.cost": round(cpu_pct * 0.9, 3), "energy.cpu.cost": round(cpu_pct, 3),
                                   "energy.networking.cost": 0.0, "energy.overhead": 0.5}
                return sample

        modules = {
            "pymobiledevice3": _package("pymobiledevice3"),
            "pymobiledevice3.usbmux": _module("pymobiledevice3.usbmux", list_devices=list_devices),
            "pymobiledevice3.lockdown": _module("pymobiledevice3.lockdown", create_using_usbmux=create_using_usbmux),
            "pymobiledevice3.tunneld": _package("pymobiledevice3.tunneld"),
            "pymobiledevice3.tunneld.api": _module("pymobiledevice3.tunneld.api",
                                                   get_tunneld_device_by_udid=get_tunneld_device_by_udid),
            "pymobiledevice3.services": _package("pymobiledevice3.services"),
            "pymobiledevice3.services.dvt": _package("pymobiledevice3.services.dvt"),
            "pymobiledevice3.services.dvt.instruments": _package("pymobiledevice3.services.dvt.instruments"),
            "pymobiledevice3.services.dvt.instruments.dvt_provider": _module(
                "pymobiledevice3.services.dvt.instruments.dvt_provider", DvtProvider=DvtProvider),
            "pymobiledevice3.exceptions": _module("pymobiledevice3.exceptions",
                                                  PasswordRequiredError=PasswordRequiredError),
            "pymobiledevice3.services.dvt.instruments.process_control": _module(
                "pymobiledevice3.services.dvt.instruments.process_control", ProcessControl=ProcessControl),
            "pymobiledevice3.services.dvt.instruments.energy_monitor": _module(
                "pymobiledevice3.services.dvt.instruments.energy_monitor", EnergyMonitor=EnergyMonitor),
        }
        for name, module in modules.items():
            monkeypatch.setitem(sys.modules, name, module)


def _package(name: str) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__path__ = []  # type: ignore[attr-defined]
    return module


def _module(name: str, **attrs: Any) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    return module

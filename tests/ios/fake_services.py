"""A fake of the iPhone service layer (:class:`melt.transports.ios.IosServices`).

No iPhone is attached where melt is tested, so this stands in for
pymobiledevice3 behind melt's own interface. It keeps what makes a phone
hard: an app must be installed (its Info.plist read) before it launches,
paths live in the app's container, a launched app runs as a separate
process that writes its own files and exits on its own, and a process can
be killed. The "app" it runs is the bundle's CFBundleExecutable, a real
program on this machine, started with the container's Documents as its
working folder.
"""

from __future__ import annotations

import plistlib
import shutil
import subprocess
from pathlib import Path
from typing import Any, Mapping, Sequence

from melt.errors import DeviceUnavailableError, TransportError


class FakeIosServices:
    def __init__(self, root: Path, *, udid: str = "00008110-000A1B2C3D4E5F60", product_type: str = "iPhone15,2",
                 ios_version: str = "17.5.1", energy: bool = True):
        self.root = Path(root)
        self.device = {"udid": udid, "name": "Test iPhone", "product_type": product_type,
                       "ios_version": ios_version, "build": "21F90"}
        self.energy = energy
        self.apps: dict[str, Path] = {}  # bundle id -> installed bundle
        self.procs: dict[int, subprocess.Popen] = {}
        self.attached = True
        self.calls: list[tuple[str, Any]] = []

    def _check(self, udid: str) -> None:
        if not self.attached or udid != self.device["udid"]:
            raise DeviceUnavailableError(f"no iPhone {udid} attached")

    def _documents(self, bundle_id: str) -> Path:
        if bundle_id not in self.apps:
            raise TransportError(f"app {bundle_id} is not installed")
        return self.root / "containers" / bundle_id / "Documents"

    def list_devices(self) -> list[dict[str, Any]]:
        return [dict(self.device)] if self.attached else []

    def device_info(self, udid: str) -> dict[str, Any]:
        self._check(udid)
        return dict(self.device)

    def install(self, udid: str, app: Path) -> None:
        self._check(udid)
        info = plistlib.loads((Path(app) / "Info.plist").read_bytes())
        bundle_id = info["CFBundleIdentifier"]
        dest = self.root / "apps" / bundle_id
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(app, dest)
        self.apps[bundle_id] = dest
        (self.root / "containers" / bundle_id / "Documents").mkdir(parents=True, exist_ok=True)
        self.calls.append(("install", bundle_id))

    def launch(self, udid: str, bundle_id: str, args: Sequence[str], env: Mapping[str, str]) -> int:
        self._check(udid)
        docs = self._documents(bundle_id)
        app = self.apps[bundle_id]
        exe = app / plistlib.loads((app / "Info.plist").read_bytes())["CFBundleExecutable"]
        for pid, proc in list(self.procs.items()):  # KillExisting, as DVT's launch does
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        proc = subprocess.Popen([str(exe), *args], cwd=docs, env={"HOME": str(docs.parent), "PATH": "/usr/bin:/bin", **env},
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs[proc.pid] = proc
        self.calls.append(("launch", list(args)))
        return proc.pid

    def is_running(self, udid: str, pid: int) -> bool:
        self._check(udid)
        proc = self.procs.get(pid)
        return proc is not None and proc.poll() is None

    def kill(self, udid: str, pid: int) -> None:
        proc = self.procs.get(pid)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def push(self, udid: str, bundle_id: str, local: Path, remote: str) -> None:
        self._check(udid)
        dest = self._documents(bundle_id) / remote
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local, dest)
        self.calls.append(("push", remote))

    def pull(self, udid: str, bundle_id: str, remote: str, local: Path) -> None:
        self._check(udid)
        src = self._documents(bundle_id) / remote
        if not src.is_file():
            raise TransportError(f"no such file in the app's Documents: {remote}")
        shutil.copyfile(src, local)

    def exists(self, udid: str, bundle_id: str, remote: str) -> bool:
        self._check(udid)
        return (self._documents(bundle_id) / remote).exists()

    def process_sample(self, udid: str, pid: int) -> dict[str, Any] | None:
        self._check(udid)
        proc = self.procs.get(pid)
        if not self.energy or proc is None or proc.poll() is not None:
            return None
        try:  # the process's real CPU time stands in for the OS's energy-impact score
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks = int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            return None
        return {"energy_impact": float(ticks)}

"""A device is a spec plus a transport: what it is, how to put files on it."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from melt.config.specs import DeviceSpec
from melt.transports.base import Transport


class Device(ABC):
    """Common behaviour; subclasses know their platform."""

    def __init__(self, spec: DeviceSpec, transport: Transport):
        self.spec = spec
        self.transport = transport

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def simulated(self) -> bool:
        return self.spec.simulated

    @abstractmethod
    def workdir(self) -> str:
        """Folder on the device for binaries, models and job files."""

    @abstractmethod
    def properties(self) -> dict[str, Any]:
        """Identity for provenance: model, OS build, CPU, whether simulated."""

    def abi(self) -> str | None:
        """The CPU ABI its programs must be built for (``arm64-v8a``, ``x86_64``); None if unknown."""
        return None

    @abstractmethod
    def stage(self, local: Path, *, category: str) -> str:
        """Make ``local`` available on the device; return its path there.

        ``category`` ("bin", "models") picks the sub-folder. Devices that share
        this machine's file system return the path unchanged.
        """

    def close(self) -> None:
        """Release connections."""

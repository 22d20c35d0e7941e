"""Run one invocation on a device and collect what it left behind.

This is the seam where on-device telemetry wraps the inference process: an
executor takes an :class:`~melt.frameworks.llamacpp.driver.Invocation` and
returns an :class:`Execution` with the raw output and any measured extras.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from melt.devices.base import Device


@dataclass
class Execution:
    """Raw outcome of one inference process."""

    stdout: str
    stderr: str
    returncode: int
    duration_s: float
    metrics: dict[str, Any] = field(default_factory=dict)  # measured by the executor itself
    files: dict[str, bytes] = field(default_factory=dict)  # stored beside the job record
    provenance: dict[str, Any] = field(default_factory=dict)


class Executor(Protocol):
    def execute(self, device: Device, invocation: Any) -> Execution:
        """Run ``invocation`` on ``device``; transport errors propagate."""


class PlainExecutor:
    """Runs the invocation directly through the device's transport, no telemetry."""

    def execute(self, device: Device, invocation: Any) -> Execution:
        own = getattr(device, "execute_plain", None)
        if own is not None:  # a device without a shell runs invocations its own way (an iPhone's app)
            return own(invocation)
        if getattr(invocation, "client", None) is not None:  # a server and its host-side client
            from melt.runner.served import execute_plain

            return execute_plain(device, invocation)
        result = device.transport.run(
            list(invocation.argv),
            env=dict(invocation.env) or None,
            timeout=invocation.timeout_s,
            check=False,
        )
        return Execution(result.stdout, result.stderr, result.returncode, result.duration_s)

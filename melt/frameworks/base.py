"""What every framework driver hands the runner.

A driver builds binaries, says which to push for a workload kind, turns a
job's parameters into an :class:`Invocation` (it never runs anything
itself: the runner does, through a transport, possibly wrapped in an
on-device telemetry script), and turns the captured output into metrics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence, runtime_checkable

OutputCallback = Callable[[str], None]
"""Receives each line a build prints (without the newline)."""


@dataclass(frozen=True)
class Invocation:
    """One command for the runner to execute on a device.

    ``argv`` holds absolute device paths; ``env`` is added to the device's
    environment; ``timeout_s`` is a wall-clock limit in seconds.
    """

    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    timeout_s: float = 600.0


@dataclass(frozen=True)
class ServedInvocation(Invocation):
    """A server process for the device plus the host-side client that drives it.

    The runner starts ``argv`` on the device (under telemetry when enabled),
    calls ``client(live)`` on the host while it runs (``live`` says whether the
    server still runs, reads its log and reaches its ports through
    ``live.transport.forward``), then stops the server. What ``client``
    returns (a JSON-able transcript) is the job's output.
    """

    client: Callable[[Any], dict[str, Any]] | None = None


@dataclass(frozen=True)
class Build:
    """A finished, cached build.

    ``binaries`` maps a binary's name to its file under ``bin_dir``;
    ``provenance`` is what ``build.json`` holds; ``cached`` is true when no
    compiler ran for this call.
    """

    dir: Path
    bin_dir: Path
    binaries: dict[str, Path]
    provenance: dict[str, Any]
    cached: bool = False


@runtime_checkable
class Framework(Protocol):
    """The shape the runner and the CLI rely on."""

    name: str
    workload_kinds: tuple[str, ...]

    def build(
        self,
        profile: str = "host",
        *,
        source: str | None = None,
        force: bool = False,
        on_output: OutputCallback | None = None,
        targets: Sequence[str] | None = None,  # binaries needed; None: the framework's default set
    ) -> Build: ...

    def binaries_for(self, kind: str) -> list[str]: ...

    def validate_params(self, kind: str, params: Mapping[str, Any]) -> dict[str, Any]: ...

    def invocation(
        self, kind: str, params: Mapping[str, Any], *, bin_dir: str, model_path: str
    ) -> Invocation: ...

    def parse_metrics(
        self, kind: str, params: Mapping[str, Any], stdout: str, stderr: str, returncode: int
    ) -> dict[str, float]: ...

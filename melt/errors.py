"""Errors melt raises.

Every error a user can cause or meet derives from :class:`MeltError`. The CLI
turns them into a one-line message and an exit code; nothing below the CLI
calls ``sys.exit``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from melt.transports.base import CommandResult


class MeltError(Exception):
    """Root of every error melt raises on purpose."""

    exit_code = 1


class ConfigError(MeltError):
    """A YAML file is malformed or does not validate.

    ``path`` is the file, ``problems`` a list of ``"field.path: message"``.
    """

    def __init__(self, path: str, problems: list[str]):
        self.path = path
        self.problems = list(problems)
        super().__init__(f"{path}: " + "; ".join(self.problems))


class UnknownNameError(MeltError):
    """A name (framework, device, workload kind, ...) is not registered."""

    def __init__(self, kind: str, name: str, available: list[str]):
        import difflib

        self.kind, self.name, self.available = kind, name, sorted(available)
        close = difflib.get_close_matches(name, self.available, n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        super().__init__(
            f"Unknown {kind} '{name}'.{hint} Available: {', '.join(self.available) or '(none)'}"
        )


class ModelFetchError(MeltError):
    """A catalogue model could not be fetched or did not verify."""


class TransportError(MeltError):
    """A device could not be reached, or a transfer failed."""


class DeviceUnavailableError(TransportError):
    """The device is gone (unplugged, offline, killed)."""


class RemoteCommandError(MeltError):
    """A command on a device exited non-zero (``check=True``)."""

    def __init__(self, result: "CommandResult"):
        self.result = result
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or [""]
        super().__init__(
            f"command exited {result.returncode}: {result.command_line()}"
            + (f": {tail[0][:300]}" if tail[0] else "")
        )


class CommandTimeout(MeltError):
    """A command on a device ran past its timeout and was killed."""


class UnsafePathError(MeltError):
    """A name from a device or another host would reach outside its folder (``..``, absolute, a symlink)."""


class OutputTooLargeError(MeltError):
    """A device or server sent more than melt reads of one output; ``limit`` is in bytes."""

    def __init__(self, what: str, limit: int):
        self.what, self.limit = what, limit
        size = f"{limit >> 20} MiB" if limit >= 1 << 20 and limit % (1 << 20) == 0 else f"{limit:,} bytes"
        super().__init__(f"{what} is over melt's limit of {size}; stopped reading it")


class DigestMismatchError(MeltError):
    """The bytes a device holds after a push are not the bytes melt sent."""


class BuildError(MeltError):
    """A framework build failed or its toolchain is missing."""


class AbiMismatchError(BuildError):
    """A build's binaries are for another instruction set than the device runs."""


class ParseError(MeltError):
    """Text could not be recognised as any known output kind."""


class JobFailed(MeltError):
    """A job could not produce its metrics; ``reason`` says why."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


class ResultsError(MeltError):
    """A results folder or index is missing, unreadable or too new."""


class JobsFailed(MeltError):
    """A run finished, but some of its jobs failed (exit code 3; the run is stored)."""

    exit_code = 3


class RegressionFound(MeltError):
    """``melt compare`` found a regression (exit code 2)."""

    exit_code = 2


class LabelsDiffer(MeltError):
    """``melt compare`` judged jobs with other labels than the current run's (exit code 3).

    A simulated baseline against a measured run, for example: the verdicts
    compare a model with hardware, so a gate must not pass on them.
    """

    exit_code = 3


class RunStopped(MeltError):
    """A run stopped part-way for a reason that is not one job's (a bug, a lost broker, ...).

    Its finished jobs are stored and ``melt run --resume RUN_ID`` finishes it.
    """

    def __init__(self, run_id: str, cause: BaseException, detail: str | None = None):
        self.run_id = run_id
        what = str(cause) if isinstance(cause, MeltError) else f"internal error in melt: {type(cause).__name__}: {cause}"
        where = f" (traceback: {detail})" if detail else ""
        super().__init__(f"run {run_id} stopped: {what}{where}; its finished jobs are kept, "
                         f"finish it with: melt run --resume {run_id}")

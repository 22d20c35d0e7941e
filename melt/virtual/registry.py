"""Where running virtual phones are recorded, so ``melt virtual list/stop`` find them.

Each phone owns ``STATE_DIR/phone-PORT/``: ``phone.json`` (its record, present
while it runs), ``phone.log`` and ``root/`` (its sandbox, kept across
restarts on the same port, like a phone's storage across reboots).
``STATE_DIR`` is ``$MELT_VIRTUAL_STATE_DIR``, else
``$XDG_STATE_HOME/melt/virtual``, else ``~/.local/state/melt/virtual``.
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from melt.errors import MeltError

RECORD = "phone.json"


def default_state_dir() -> Path:
    """The folder holding every virtual phone's record and sandbox."""
    env = os.environ.get("MELT_VIRTUAL_STATE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(base) / "melt" / "virtual"


def phone_dir(state_dir: Path, port: int) -> Path:
    """The folder of the phone listening on ``port``."""
    return Path(state_dir) / f"phone-{port}"


@dataclass(frozen=True)
class PhoneRecord:
    """A running phone, as written to ``phone.json``."""

    address: str  # host:port to `adb connect` to
    port: int
    pid: int
    started_at: float  # unix time (s)
    root: str  # sandbox folder on the host
    truth_log: str  # host path of the truth log
    isolation: str  # "bwrap" or "none"
    kind: str = "android"
    abi: str = ""  # the ABI it reports (ro.product.cpu.abi)
    emulation: str = ""  # how it runs that ABI's code: native, binfmt or userns (qemu-user)

    @property
    def alive(self) -> bool:
        """True while the recorded process still runs and is a virtual phone."""
        try:
            cmdline = Path(f"/proc/{self.pid}/cmdline").read_bytes()
        except OSError:
            return False
        return b"melt" in cmdline and b"virtual" in cmdline


def write_record(record: PhoneRecord, state_dir: Path) -> Path:
    """Write ``record`` atomically into its phone folder; returns the file."""
    path = phone_dir(state_dir, record.port) / RECORD
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(record), indent=2) + "\n")
    os.replace(tmp, path)
    return path


def remove_record(state_dir: Path, port: int, pid: int | None = None) -> None:
    """Delete a phone's record (only if it is still ``pid``'s, when given)."""
    path = phone_dir(state_dir, port) / RECORD
    try:
        if pid is not None and json.loads(path.read_text()).get("pid") != pid:
            return
        path.unlink()
    except (OSError, ValueError):
        pass


def list_phones(state_dir: Path | None = None, *, prune: bool = True) -> list[PhoneRecord]:
    """Records of the phones that run now; stale records are removed when ``prune``."""
    state_dir = Path(state_dir or default_state_dir())
    out = []
    for path in sorted(state_dir.glob(f"phone-*/{RECORD}")):
        try:
            record = PhoneRecord(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            continue
        if record.alive:
            out.append(record)
        elif prune:
            path.unlink(missing_ok=True)
    return sorted(out, key=lambda r: r.port)


def find_phone(address: str, state_dir: Path | None = None) -> PhoneRecord:
    """The running phone at ``address`` (``host:port`` or just the port).

    Raises :class:`MeltError` when none runs there.
    """
    port_text = address.rpartition(":")[2]
    for record in list_phones(state_dir):
        if record.address == address or str(record.port) == port_text:
            return record
    raise MeltError(f"no virtual phone runs at {address} (see `melt virtual list`)")


def stop_phone(address: str, state_dir: Path | None = None, timeout: float = 10.0) -> PhoneRecord:
    """Stop the phone at ``address``: SIGTERM, then SIGKILL after ``timeout`` s."""
    state_dir = Path(state_dir or default_state_dir())
    record = find_phone(address, state_dir)
    try:
        os.kill(record.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while record.alive and time.monotonic() < deadline:
            time.sleep(0.05)
        if record.alive:
            os.kill(record.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    remove_record(state_dir, record.port, record.pid)
    return record

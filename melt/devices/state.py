"""Device state knobs set before measuring and always restored, plus health snapshots.

Each knob (screen, brightness, charging, stay-awake, airplane mode, CPU
governor) has ``available(t)``, ``show(t)``, ``write(t, value)`` and
``restore(t, saved)``, and receives the device's transport, so the same code
tunes a phone, the virtual phone or a board. :class:`DeviceState` applies the
knobs a :class:`~melt.config.specs.StateSpec` asks for and restores every one
it changed on exit, whatever the exit: an error, a failed job, Ctrl-C (a
second Ctrl-C during the restore is held back until the restore is done).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import threading
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

from melt.config.specs import StateSpec
from melt.errors import MeltError
from melt.transports.base import Transport

q = shlex.quote


def _sh(t: Transport, script: str, *, timeout: float = 30) -> tuple[int, str]:
    r = t.shell(script, timeout=timeout, check=False)
    return r.returncode, r.stdout.strip()


def _has(t: Transport, *commands: str) -> bool:
    return _sh(t, " && ".join(f"command -v {q(c)} >/dev/null 2>&1" for c in commands))[0] == 0


class StateError(MeltError):
    """A knob could not be set (the device refused, or needs root)."""


class Knob(ABC):
    """One setting of a device: read it, change it, put it back."""

    name = "knob"

    @abstractmethod
    def available(self, t: Transport) -> bool:
        """Whether this device has the setting (and melt may change it)."""

    @abstractmethod
    def show(self, t: Transport) -> str:
        """The current value, as ``restore`` takes it back."""

    @abstractmethod
    def write(self, t: Transport, value: Any) -> None:
        """Set the value the device spec asks for."""

    def restore(self, t: Transport, saved: str) -> None:
        _check(t, self.restore_script(saved), f"{self.name} restore")

    @abstractmethod
    def restore_script(self, saved: str) -> str:
        """The device shell command that puts the saved value back (also shown to do it by hand)."""


def _check(t: Transport, script: str, what: str) -> None:
    r = t.shell(script, timeout=30, check=False)
    if r.returncode != 0:
        raise StateError(f"{what}: {(r.stderr or r.stdout).strip()[:200] or f'exit {r.returncode}'}")


class ScreenKnob(Knob):
    """Screen on/off through key events; the state from ``dumpsys power``."""

    name = "screen"

    def available(self, t: Transport) -> bool:
        return _has(t, "input", "dumpsys")

    def show(self, t: Transport) -> str:
        from melt.parsers.power import parse_dumpsys_power

        _, out = _sh(t, "dumpsys power")
        return "off" if parse_dumpsys_power(out).get("screen_on") is False else "on"

    def write(self, t: Transport, value: Any) -> None:
        _check(t, self.restore_script(value), f"screen {value}")

    def restore_script(self, saved: str) -> str:
        return f"input keyevent {'KEYCODE_SLEEP' if saved == 'off' else 'KEYCODE_WAKEUP'}"


class BrightnessKnob(Knob):
    """Manual brightness (0-255); saves the auto-brightness mode too."""

    name = "brightness"

    def available(self, t: Transport) -> bool:
        return _has(t, "settings")

    def show(self, t: Transport) -> str:
        _, mode = _sh(t, "settings get system screen_brightness_mode")
        _, level = _sh(t, "settings get system screen_brightness")
        return f"{mode or 'null'},{level or 'null'}"

    def write(self, t: Transport, value: Any) -> None:
        _check(t, f"settings put system screen_brightness_mode 0 && "
                  f"settings put system screen_brightness {int(value)}", "brightness")

    def restore_script(self, saved: str) -> str:
        mode, _, level = saved.partition(",")
        parts = []
        parts.append(f"settings put system screen_brightness {q(level)}" if level != "null"
                     else "settings delete system screen_brightness")
        parts.append(f"settings put system screen_brightness_mode {q(mode)}" if mode != "null"
                     else "settings delete system screen_brightness_mode >/dev/null")
        return " && ".join(parts)  # a failure anywhere is the restore's failure


#: vendor charger switches: file -> value that stops charging
CHARGING_FILES = {
    "/sys/class/power_supply/battery/input_suspend": "1",
    "/sys/class/power_supply/battery/charging_enabled": "0",
    "/sys/class/power_supply/battery/battery_charging_enabled": "0",
}


class ChargingKnob(Knob):
    """Charging off: ``dumpsys battery unplug`` plus the vendor sysfs switch where writable."""

    name = "charging"
    warning: str | None = None

    def available(self, t: Transport) -> bool:
        return _has(t, "dumpsys") or bool(self._files(t))

    def _files(self, t: Transport) -> list[str]:
        paths = " ".join(q(p) for p in CHARGING_FILES)
        _, out = _sh(t, f"for f in {paths}; do [ -w \"$f\" ] && echo \"$f\"; done; true")
        return out.split()

    def show(self, t: Transport) -> str:
        files = self._files(t)
        values = {}
        for f in files:
            _, v = _sh(t, f"cat {q(f)}")
            values[f] = v
        _, dump = _sh(t, "dumpsys battery 2>/dev/null")
        return json.dumps({"files": values, "unplugged": "UPDATES STOPPED" in dump})

    def write(self, t: Transport, value: Any) -> None:
        if value == "enabled":
            self.restore(t, json.dumps({"files": {f: ("0" if v == "1" else "1")
                                                  for f, v in CHARGING_FILES.items()}, "unplugged": False}))
            return
        parts = ["dumpsys battery unplug >/dev/null 2>&1 || true"]
        files = self._files(t)
        for f in files:
            parts.append(f"echo {CHARGING_FILES[f]} > {q(f)}")
        _check(t, " ; ".join(parts), "charging off")
        if not files:
            self.warning = ("charging: no writable charger switch (input_suspend, charging_enabled) on this "
                            "device; `dumpsys battery unplug` only changes what Android reports, a plugged-in "
                            "charger keeps charging: jobs measured while it charges are flagged (charging=1)")

    def restore_script(self, saved: str) -> str:
        data = json.loads(saved)
        parts = []
        if not data.get("unplugged"):  # first: `a || b && c` is `(a || b) && c` in sh
            parts.append("dumpsys battery reset >/dev/null 2>&1 || ! command -v dumpsys >/dev/null 2>&1")
        for f, v in data.get("files", {}).items():
            parts.append(f"{{ [ ! -w {q(f)} ] || echo {q(v)} > {q(f)}; }}")
        return " && ".join(parts) or "true"


class StayAwakeKnob(Knob):
    """Stay awake while plugged in (``svc power stayon``)."""

    name = "stay_awake"

    def available(self, t: Transport) -> bool:
        return _has(t, "svc", "settings")

    def show(self, t: Transport) -> str:
        return _sh(t, "settings get global stay_on_while_plugged_in")[1] or "0"

    def write(self, t: Transport, value: Any) -> None:
        _check(t, f"svc power stayon {'true' if value else 'false'}", "stay awake")

    def restore_script(self, saved: str) -> str:
        return f"settings put global stay_on_while_plugged_in {saved if saved.isdigit() else '0'}"


class AirplaneKnob(Knob):
    """Airplane mode (``cmd connectivity airplane-mode``, Android 11+)."""

    name = "airplane"

    def available(self, t: Transport) -> bool:
        return _sh(t, "cmd connectivity airplane-mode >/dev/null 2>&1")[0] == 0

    def show(self, t: Transport) -> str:
        return "1" if _sh(t, "settings get global airplane_mode_on")[1] == "1" else "0"

    def write(self, t: Transport, value: Any) -> None:
        _check(t, self.restore_script(value), "airplane mode")

    def restore_script(self, saved: Any) -> str:
        on = saved in (True, "1", 1)
        return f"cmd connectivity airplane-mode {'enable' if on else 'disable'}"


class GovernorKnob(Knob):
    """The cpufreq governor of every core (needs a writable sysfs: root)."""

    name = "governor"
    GLOB = "/sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_governor"

    def available(self, t: Transport) -> bool:
        _, out = _sh(t, f"for f in {self.GLOB}; do [ -w \"$f\" ] || {{ echo no; break; }}; done; "
                        f"ls {self.GLOB} >/dev/null 2>&1 || echo no")
        return "no" not in out

    def show(self, t: Transport) -> str:
        _, out = _sh(t, f"for f in {self.GLOB}; do echo \"$f $(cat \"$f\")\"; done")
        return json.dumps(dict(line.split(" ", 1) for line in out.splitlines() if " " in line))

    def write(self, t: Transport, value: Any) -> None:
        _check(t, f"for f in {self.GLOB}; do echo {q(str(value))} > \"$f\" || exit 1; done", "governor")

    def restore_script(self, saved: str) -> str:
        per_core = json.loads(saved)
        return " && ".join(f"echo {q(v)} > {q(f)}" for f, v in per_core.items()) or "true"


class NvpmodelKnob(Knob):
    """Jetson power mode (``nvpmodel -m N``; as root, else through ``sudo -n``)."""

    name = "nvpmodel"
    _ROOT = 'if [ "$(id -u)" = 0 ]; then S=; else S="sudo -n"; fi; '

    def available(self, t: Transport) -> bool:
        return _has(t, "nvpmodel")

    def show(self, t: Transport) -> str:
        from melt.parsers.nvpmodel import parse_nvpmodel_query

        _, out = _sh(t, self._ROOT + "$S nvpmodel -q")
        mode = parse_nvpmodel_query(out).get("mode_id")
        if mode is None:
            raise StateError(f"nvpmodel -q gave no mode id: {out[:200]!r}")
        return str(mode)

    def write(self, t: Transport, value: Any) -> None:
        _check(t, self.restore_script(value), f"nvpmodel -m {int(value)}")

    def restore_script(self, saved: Any) -> str:
        return self._ROOT + f"$S nvpmodel -m {int(saved)} </dev/null"


#: spec field -> knob, in the order they are applied (restored in reverse)
KNOBS: tuple[tuple[str, type[Knob]], ...] = (
    ("stay_awake", StayAwakeKnob),
    ("charging", ChargingKnob),
    ("airplane", AirplaneKnob),
    ("governor", GovernorKnob),
    ("nvpmodel", NvpmodelKnob),
    ("brightness", BrightnessKnob),
    ("screen", ScreenKnob),
)


@dataclass
class KnobReport:
    knob: str
    target: Any
    before: str | None = None
    applied: bool = False
    restored: bool = False
    error: str | None = None
    warning: str | None = None  # applied, but not everything the knob promises
    by_hand: str | None = None  # when a restore failed: the command that puts it back


def by_hand_command(transport: Transport, script: str) -> str:
    """``script`` as a command a user can paste on this host to run it on the device."""
    serial = getattr(transport, "serial", None)
    if isinstance(serial, str):
        return f"adb -s {q(serial)} shell {q(script)}"
    host, user, port = (getattr(transport, a, None) for a in ("host", "user", "port"))
    if isinstance(host, str) and isinstance(user, str):
        return f"ssh -p {int(port or 22)} {q(f'{user}@{host}')} {q(script)}"
    return f"sh -c {q(script)}"


@dataclass
class DeviceState:
    """Context manager: apply a :class:`StateSpec`, restore everything on exit.

    ``strict``: raise :class:`StateError` when a requested knob is not
    available (else it is skipped and reported). ``journal``: a host file
    holding what was saved, so :func:`restore_journal` can put a device back
    after melt itself was killed.
    """

    transport: Transport
    spec: StateSpec
    strict: bool = False
    journal: Path | None = None
    reports: list[KnobReport] = field(default_factory=list)

    def __enter__(self) -> "DeviceState":
        try:
            for fname, cls in KNOBS:
                target = getattr(self.spec, fname)
                if target is None:
                    continue
                knob = cls()
                rep = KnobReport(knob.name, target)
                self.reports.append(rep)
                if not knob.available(self.transport):
                    rep.error = "not available on this device"
                    if self.strict:
                        raise StateError(f"{knob.name}: not available on this device")
                    continue
                rep.before = knob.show(self.transport)
                self._save_journal()
                knob.write(self.transport, target)
                rep.applied = True
                rep.warning = getattr(knob, "warning", None)
                self._save_journal()
        except BaseException:
            self.restore()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore()

    def restore(self) -> list[KnobReport]:
        """Put back every knob that was applied (in reverse order); never raises."""
        with _sigint_deferred():
            for rep in reversed(self.reports):
                if not rep.applied or rep.restored or rep.before is None:
                    continue
                knob = dict((cls.name, cls) for _, cls in KNOBS)[rep.knob]()
                try:
                    knob.restore(self.transport, rep.before)
                    rep.restored, rep.error, rep.by_hand = True, None, None  # an earlier failure is over
                except Exception as exc:  # keep restoring the others
                    rep.error = f"restore failed: {exc}"
                    with contextlib.suppress(Exception):
                        rep.by_hand = by_hand_command(self.transport, knob.restore_script(rep.before))
            self._save_journal()
        return self.reports

    def as_dict(self) -> list[dict[str, Any]]:
        return [asdict(r) for r in self.reports]

    def failed_restores(self) -> list[KnobReport]:
        """Knobs that were changed and could not be put back (each with its ``by_hand`` command)."""
        return [r for r in self.reports if r.applied and not r.restored and r.error]

    def _save_journal(self) -> None:
        if self.journal is None:
            return
        pending = [asdict(r) for r in self.reports if r.applied and not r.restored]
        if pending:
            # temp file + rename: a melt killed mid-write never leaves half a journal
            self.journal.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.journal.with_name(f".{self.journal.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(pending, indent=1))
            os.replace(tmp, self.journal)
        else:
            self.journal.unlink(missing_ok=True)


def restore_journal(transport: Transport, journal: Path) -> list[KnobReport]:
    """Restore what a killed melt left changed, from its journal file.

    A journal that cannot be read (written by an older melt without the
    atomic rename, or damaged) is moved aside to ``NAME.corrupt`` and
    reported as one failed knob saying what to check by hand; later runs on
    the device go on.
    """
    if not journal.exists():
        return []
    state = DeviceState(transport, StateSpec(), journal=journal)
    try:
        state.reports = [KnobReport(**r) for r in json.loads(journal.read_text())]
    except (OSError, ValueError, TypeError) as exc:
        aside = journal.with_name(journal.name + ".corrupt")
        with contextlib.suppress(OSError):
            os.replace(journal, aside)
        return [KnobReport("journal", None, error=(
            f"the device-state journal {journal} could not be read ({exc}); moved to {aside}. "
            "Settings an earlier melt changed may still be changed: check screen brightness, "
            "charging (dumpsys battery reset), stay-awake and governors by hand"))]
    return state.restore()


@contextlib.contextmanager
def _sigint_deferred() -> Iterator[None]:
    """Hold SIGINT back while restoring; re-raise it as KeyboardInterrupt afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: got.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if got:
        raise KeyboardInterrupt


# --------------------------------------------------------------- health


def health_snapshot(transport: Transport, *, thermal_dir: str = "/sys/class/thermal",
                    battery_dir: str | None = None) -> dict[str, Any]:
    """Battery, temperatures, thermal status, frequencies, load: one shell call.

    Parsed with melt's parsers (dumpsys battery, thermal zones, dumpsys
    thermalservice, power-supply uevent). Fields the device lacks are absent.
    """
    out = transport.shell(health_script(thermal_dir=thermal_dir, battery_dir=battery_dir),
                          timeout=60, check=False).stdout
    return parse_health(out)


def health_script(*, thermal_dir: str = "/sys/class/thermal", battery_dir: str | None = None) -> str:
    """The shell script behind :func:`health_snapshot` (the job runner can run it too)."""
    td = q(thermal_dir.rstrip("/"))
    bat = q(battery_dir) if battery_dir else ""
    return "\n".join([
        f"echo '@zones'; grep . {td}/thermal_zone*/type {td}/thermal_zone*/temp 2>/dev/null",
        "if command -v dumpsys >/dev/null 2>&1; then echo '@battery'; dumpsys battery 2>/dev/null;"
        " echo '@thermalservice'; dumpsys thermalservice 2>/dev/null; fi",
        (f"[ -r {bat}/uevent ] && echo '@uevent' && cat {bat}/uevent" if bat else "true"),
        "echo '@cpufreq'; for d in /sys/devices/system/cpu/cpu[0-9]*/cpufreq; do [ -d \"$d\" ] &&"
        " echo \"${d%/cpufreq} $(cat $d/scaling_cur_freq 2>/dev/null) $(cat $d/scaling_max_freq 2>/dev/null)"
        " $(cat $d/cpuinfo_max_freq 2>/dev/null) $(cat $d/scaling_governor 2>/dev/null)\"; done",
        "echo '@loadavg'; cat /proc/loadavg",
        "true",
    ])


def parse_health(out: str) -> dict[str, Any]:
    """A health snapshot from the output of :func:`health_script`."""
    from melt.parsers.battery import parse_dumpsys_battery, parse_power_supply_uevent
    from melt.parsers.thermal import parse_dumpsys_thermalservice, parse_thermal_zones

    sections: dict[str, list[str]] = {}
    current = None
    for line in out.splitlines():
        if line.startswith("@") and line[1:].strip().isidentifier():
            current = line[1:].strip()
            sections[current] = []
        elif current:
            sections[current].append(line)
    snap: dict[str, Any] = {}
    zones = parse_thermal_zones("\n".join(sections.get("zones", [])))
    if zones:
        snap["temps_c"] = {f"{z.get('type', 'zone')}#{z['zone']}": z.get("temp_c") for z in zones}
    if sections.get("battery"):
        snap["battery"] = parse_dumpsys_battery("\n".join(sections["battery"]))
    elif sections.get("uevent"):
        snap["battery"] = parse_power_supply_uevent("\n".join(sections["uevent"]))
    if sections.get("thermalservice"):
        status = parse_dumpsys_thermalservice("\n".join(sections["thermalservice"]))["throttling_status"]
        if status is not None:
            snap["thermal_status"] = status
    cpus = {}
    for line in sections.get("cpufreq", []):
        parts = line.split()
        if len(parts) >= 4 and parts[1].isdigit():
            name = parts[0].rsplit("/", 1)[-1]
            cpus[name] = {"cur_khz": int(parts[1]), "max_khz": int(parts[2]) if parts[2].isdigit() else None,
                          "hw_max_khz": int(parts[3]) if parts[3].isdigit() else None,
                          "governor": parts[4] if len(parts) > 4 else None}
    if cpus:
        snap["cpufreq"] = cpus
    load = " ".join(sections.get("loadavg", [])).split()
    if len(load) >= 3:
        snap["loadavg"] = [float(x) for x in load[:3]]
    return snap

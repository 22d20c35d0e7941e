"""The model thread of a running virtual phone.

Every tick (``rates.tick_hz``, 100 Hz by default) it steps the physical model
with the CPU use of the phone's process tree (read at ``rates.cpu_sample_hz``),
appends one line to the truth log, and duty-cycles the tree with
SIGSTOP/SIGCONT while throttled. At ``rates.sysfs_hz`` it reads the control
and state files and rewrites the sysfs files atomically.

Truth log: ``/data/melt-virtual/truth.csv`` on the device (``root/data/
melt-virtual/truth.csv`` in the phone's folder on the host), one line per tick::

    boottime_s,monotonic_s,realtime_s,energy_j,power_w,current_a,voltage_v,
    soc_temp_c,battery_temp_c,busy_cores,freq_fraction,throttled

The clocks are the host's (the device shares its kernel): ``boottime_s`` is
what ``/proc/uptime`` counts, ``realtime_s`` what ``date +%s.%N`` prints.
``energy_j`` is the cumulative energy drawn by the load since the phone
started; ``power_w`` the power over the tick that ended at that time.

Control files in ``/data/melt-virtual/control/`` (write them through
``adb shell`` or :class:`melt.virtual.phone.VirtualPhone`):

- ``temperature``: ``C`` (die and body), ``soc=C`` or ``body=C``; applied once, then removed;
- ``throttle``: ``on``, ``off`` or ``auto`` (the default);
- ``charger``: ``1`` plugs a charger in, ``0`` pulls it.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path

from melt.virtual.config import VirtualPhoneConfig
from melt.virtual.gauge import FuelGauge, OdpmCounters, source_shares
from melt.virtual.physics import PhysicsModel
from melt.virtual.proctree import CpuMeter, OrphanReaper, signal_tree
from melt.virtual.sandbox import Sandbox

log = logging.getLogger(__name__)

TRUTH_COLUMNS = (
    "boottime_s,monotonic_s,realtime_s,energy_j,power_w,current_a,voltage_v,"
    "soc_temp_c,battery_temp_c,busy_cores,freq_fraction,throttled"
)
TRUTH_DEVICE_PATH = "/data/melt-virtual/truth.csv"


class Simulator(threading.Thread):
    """Runs the physical model against the real process tree of the phone."""

    def __init__(self, config: VirtualPhoneConfig, sandbox: Sandbox, spawned: set[int]):
        super().__init__(name="virtual-phone-model", daemon=True)
        self.cfg = config
        self.sandbox = sandbox
        self.model = PhysicsModel(config)
        self.meter = CpuMeter()
        self.reaper = OrphanReaper(spawned)
        self.truth_path = sandbox.host_path(TRUTH_DEVICE_PATH)
        self._halt = threading.Event()
        self._written: dict[Path, str] = {}
        self._running = True  # the tree is not SIGSTOPped
        self.ncpu = sandbox.cpu_count
        self.lock = threading.Lock()
        b = config.battery
        self.gauge = FuelGauge(b.gauge, sign=-1 if b.current_sign == "negative-discharging" else 1)
        self.odpm = OdpmCounters(config.odpm) if config.odpm.enabled else None
        self._shares = source_shares(config.odpm)
        self._create_switch()

    def _create_switch(self) -> None:
        """The charger's sysfs switch (kept across restarts, like the phone's own)."""
        switch = self.cfg.battery.charger.switch
        bat = self.sandbox.host_path("/sys/class/power_supply/battery")
        bat.mkdir(parents=True, exist_ok=True)
        for name in ("input_suspend", "charging_enabled"):
            if name != switch:
                (bat / name).unlink(missing_ok=True)
        if switch != "none" and not (bat / switch).exists():
            self.sandbox.write(bat / switch, ("0" if switch == "input_suspend" else "1") + "\n")

    def stop(self, timeout: float = 5.0) -> None:
        """End the loop, let the tree run again and flush the truth log."""
        self._halt.set()
        if self.is_alive():
            self.join(timeout)
        if not self._running:
            signal_tree(os.getpid(), signal.SIGCONT)

    # ---------------------------------------------------------------- loop
    def run(self) -> None:
        rates = self.cfg.rates
        period = 1.0 / rates.tick_hz
        cpu_every = max(1, round(rates.tick_hz / rates.cpu_sample_hz))
        sysfs_every = max(1, round(rates.tick_hz / rates.sysfs_hz))
        flush_every = max(1, round(rates.tick_hz / 10))
        with open(self.sandbox.create_file(self.truth_path), "w", buffering=1 << 16) as truth:
            truth.write(TRUTH_COLUMNS + "\n")
            self._sync_inputs()
            self._write_sysfs()
            last = time.monotonic()
            cpu_s, cpu_t = self.meter.seconds(), last
            busy, i, deadline = 0.0, 0, last
            while not self._halt.is_set():
                deadline += period
                delay = deadline - time.monotonic()
                if delay > 0:
                    self._halt.wait(delay)
                elif delay < -1.0:  # fell far behind (suspend, overload): do not catch up
                    deadline = time.monotonic()
                i += 1
                now = time.monotonic()
                if i % cpu_every == 0:
                    total = self.meter.seconds()
                    if now > cpu_t:
                        busy = (total - cpu_s) / (now - cpu_t)
                    cpu_s, cpu_t = total, now
                    self.reaper.sweep()
                if i % sysfs_every == 0:
                    self._sync_inputs()
                with self.lock:
                    dt = now - last
                    s = self.model.step(dt, busy)
                    changed = self.gauge.feed(now, dt, s.current_a, s.voltage_v)
                    boot = time.clock_gettime(time.CLOCK_BOOTTIME)
                    if self.odpm is not None and self.odpm.feed(boot, dt, self._power_parts(), self._shares):
                        self._write_odpm()
                last = now
                truth.write(
                    f"{time.clock_gettime(time.CLOCK_BOOTTIME):.6f},{now:.6f},{time.time():.6f},"
                    f"{s.energy_j:.6f},{s.power_w:.5f},{s.current_a:.5f},{s.voltage_v:.5f},"
                    f"{s.soc_c:.4f},{s.body_c:.4f},{s.busy_cores:.4f},{s.freq_fraction:.3f},"
                    f"{int(s.throttled)}\n"
                )
                self._duty_cycle(now)
                if changed:
                    self._write_gauge()
                if i % sysfs_every == 0:
                    self._write_sysfs()
                if i % flush_every == 0:
                    truth.flush()

    def _duty_cycle(self, now: float) -> None:
        s, c = self.model.state, self.cfg.cpu
        want_run = True
        if s.throttled and s.freq_fraction < 1.0:
            phase = (now % c.throttle_period_s) / c.throttle_period_s
            want_run = phase < s.freq_fraction
        if not want_run:  # every tick: processes started meanwhile stop too
            signal_tree(os.getpid(), signal.SIGSTOP)
        elif not self._running:
            signal_tree(os.getpid(), signal.SIGCONT)
        self._running = want_run

    # ---------------------------------------------------------------- inputs
    def _sync_inputs(self) -> None:
        sb, s = self.sandbox, self.model.state
        ctl = sb.state_path("control")
        temp_file = ctl / "temperature"
        text = self.sandbox.read(temp_file)
        if text:
            node, _, value = text.rpartition("=")
            try:
                with self.lock:
                    self.model.set_temperature(float(value), node.strip() or "all")
            except ValueError:
                log.warning("ignoring control/temperature %r", text)
            self.sandbox.clear(ctl, temp_file.name)
        mode = self.sandbox.read(ctl / "throttle") or "auto"
        self.model.force_throttle = {"on": True, "off": False}.get(mode)
        charger = self.sandbox.read(ctl / "charger")
        if charger in ("0", "1"):
            s.charger_online = charger == "1"
        s.screen_on = (self.sandbox.read(sb.state_path("state/screen")) or "on") != "off"
        try:
            s.brightness = max(0, min(255, int(self.sandbox.read(sb.state_path("settings/system/screen_brightness")) or 128)))
        except ValueError:
            pass
        switch = self.cfg.battery.charger.switch
        value = self.sandbox.read(sb.host_path(f"/sys/class/power_supply/battery/{switch}"))
        if switch == "input_suspend":
            s.charging_enabled = value != "1"
        elif switch == "charging_enabled":
            s.charging_enabled = value != "0"
        else:  # nothing on this phone cuts the charger
            s.charging_enabled = True

    # ---------------------------------------------------------------- outputs
    def _power_parts(self) -> dict[str, float]:
        """The model's power split by source (W): what the ODPM rails carry."""
        s, pw = self.model.state, self.cfg.power
        screen = 0.0
        if s.screen_on:
            screen = pw.screen_base_w + (pw.screen_max_w - pw.screen_base_w) * s.brightness / 255
        return {"idle": pw.idle_w, "screen": screen, "cpu": max(0.0, s.power_w - pw.idle_w - screen)}

    def _write_gauge(self) -> None:
        g = self.gauge
        bat = self.sandbox.host_path("/sys/class/power_supply/battery")
        self._put(bat / "current_now", str(g.current_raw))
        self._put(bat / "current_avg", str(g.current_raw))
        self._put(bat / "voltage_now", str(g.voltage_uv))

    def _write_odpm(self) -> None:
        assert self.odpm is not None
        base = self.sandbox.host_path("/sys/bus/iio/devices")
        for n, text in enumerate(self.odpm.shown):
            dev = base / f"iio:device{n}"
            if self.sandbox.read(dev / "name") is None:
                self._write(dev / "name", f"s2mpg1{n}-odpm\n")
            self._write(dev / "energy_value", text + "\n")

    def _put(self, path: Path, value: str) -> None:
        if self._written.get(path) != value:
            self._write(path, value + "\n")
            self._written[path] = value

    def _write(self, path: Path, text: str) -> None:
        """Write a model file; one the phone's programs replaced by a symlink is skipped, not followed."""
        try:
            self.sandbox.write(path, text)
        except OSError as exc:
            log.warning("not writing %s: %s", path, exc.strerror or exc)

    def _write_sysfs(self) -> None:
        with self.lock:
            m, s = self.model, self.model.state
            b = self.cfg.battery
            bat = self.sandbox.host_path("/sys/class/power_supply/battery")
            self._put(bat / "capacity", str(m.level_pct))
            self._put(bat / "voltage_ocv", str(int(round(m.ocv(m.level_fraction) * 1e6))))
            self._put(bat / "temp", str(int(round(s.body_c * 10))))
            self._put(bat / "status", m.battery_status())
            self._put(bat / "charge_counter", str(int(s.charge_c / 3.6 * 1000)))
            self._put(bat / "charge_full", str(int(b.capacity_mah * 1000)))
            self._put(bat / "charge_full_design", str(int(b.capacity_mah * 1000)))
            self._put(self.sandbox.host_path("/sys/class/power_supply/usb/online"),
                      "1" if s.charger_online else "0")
            self._put(self.sandbox.host_path("/sys/class/power_supply/usb/present"),
                      "1" if s.charger_online else "0")
            for n, zone in enumerate(self.cfg.thermal.zones):
                zdir = self.sandbox.thermal_zone_dir(n)
                self._put(zdir / "type", zone.type)
                self._put(zdir / "mode", "enabled")
                self._put(zdir / "temp", str(int(round(m.zone_temp_c(zone.source) * 1000))))
            c = self.cfg.cpu
            cap = int(c.max_freq_khz * s.freq_fraction)
            util = min(1.0, s.busy_cores / max(1, self.ncpu) * 1.25)
            cur = int(c.min_freq_khz + (max(cap, c.min_freq_khz) - c.min_freq_khz) * util)
            cur -= cur % 1000
            cpu = self.sandbox.host_path("/sys/devices/system/cpu")
            for n in range(self.ncpu):
                fdir = cpu / f"cpu{n}/cpufreq"
                self._put(fdir / "scaling_cur_freq", str(cur))
                self._put(fdir / "cpuinfo_cur_freq", str(cur))
                self._put(fdir / "scaling_max_freq", str(cap))
                self._put(fdir / "scaling_min_freq", str(c.min_freq_khz))
                self._put(fdir / "cpuinfo_max_freq", str(c.max_freq_khz))
                self._put(fdir / "cpuinfo_min_freq", str(c.min_freq_khz))
                self._put(fdir / "related_cpus", str(n))
                self._put(fdir / "affected_cpus", str(n))
                self._put(fdir / "scaling_available_governors", "schedutil performance powersave")
                if self.sandbox.read(fdir / "scaling_governor") is None:
                    self._put(fdir / "scaling_governor", "schedutil")
            override = self.sandbox.read(self.sandbox.state_path("state/thermal_status_override"))
            self._put(self.sandbox.state_path("state/thermal_status"),
                      override if override and override.isdigit() else str(m.thermal_status()))
            self._put(self.sandbox.state_path("state/cooling"), "1" if s.throttled else "0")



"""The model thread of the virtual Jetson: the phone's model, Jetson sensors.

The physics is the phone's (:mod:`melt.virtual.physics`: power from the real
CPU use of the processes its SSH sessions run, two-node heat, throttling),
without a screen or a battery. What it writes differs:

- INA3221 rails under hwmon (``inN_input`` bus mV, ``currN_input`` mA): each
  rail carries its share of the idle and the CPU power, averaged over the
  sensor's refresh window (``1 / rates.sysfs_hz``), as the INA3221's averaging
  does. The bus voltage sags with the current through the supply's
  resistance (``rails[].supply_mohm``) and reads in steps of
  ``ina3221.bus_lsb_mv``; the current reads off by the rail's
  ``gain_error_pct``, with Gaussian noise (``ina3221.noise_ma``), in whole mA.
  So ``in x curr`` is the rail's power only up to the sensor's errors, as on a
  real board;
- the board's memory (``/data/melt-virtual/state/meminfo``, what its
  tegrastats shows): ``memory.total_mb`` of RAM, of which
  ``memory.baseline_used_mb`` plus the resident memory of every process the
  board runs is used;
- thermal zones under ``/sys/devices/virtual/thermal``;
- cpufreq files, capped by the ``nvpmodel`` mode and by throttling, pinned at
  the maximum while ``jetson_clocks`` is on.

The truth log (``/data/melt-virtual/truth.csv``) has the phone's columns.
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

from melt.virtual.jetson_config import HWMON_DIR, VirtualJetsonConfig
from melt.virtual.jetson_sensors import board_meminfo, ina3221_reading
from melt.virtual.physics import PhysicsModel
from melt.virtual.proctree import descendants, signal_tree
from melt.virtual.sandbox import Sandbox
from melt.virtual.simulator import Simulator


class JetsonPhysics(PhysicsModel):
    """The phone's model with the power mode's frequency cap on top of throttling."""

    mode_fraction = 1.0

    def _update_throttle(self) -> None:
        super()._update_throttle()
        self.state.freq_fraction = min(self.state.freq_fraction, self.mode_fraction)


class JetsonSimulator(Simulator):
    """See the module doc."""

    def __init__(self, config: VirtualJetsonConfig, sandbox: Sandbox, spawned: set[int]):
        super().__init__(config, sandbox, spawned)
        self.jcfg = config
        self.model = JetsonPhysics(config)
        self.model.state.screen_on = False
        self.pinned = False
        self._last_energy: tuple[float, float] | None = None  # (model time, energy) at the last write
        self._rng = random.Random(config.ina3221.seed)
        self._memory_at = 0.0  # monotonic time of the last memory figure

    def _write_memory(self) -> None:
        """The board's RAM figures: its own total, used = baseline + the RSS of what it runs."""
        now = time.monotonic()
        if now - self._memory_at < 0.2:  # tegrastats prints at most 5 lines a second here
            return
        self._memory_at = now
        page = os.sysconf("SC_PAGE_SIZE")
        rss = 0
        for pid in descendants(os.getpid()):
            try:
                rss += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * page
            except (OSError, IndexError, ValueError):
                continue
        self._put(self.sandbox.state_path("state", "meminfo"), board_meminfo(self.jcfg.memory, rss))

    def _sync_inputs(self) -> None:
        super()._sync_inputs()
        state = self.sandbox.state_path("state")
        mode = self.sandbox.read(state / "nvpmodel")
        if mode and mode.isdigit():
            self.model.mode_fraction = self.jcfg.mode(int(mode)).freq_fraction
        self.pinned = self.sandbox.read(state / "jetson_clocks") == "1"

    def _duty_cycle(self, now: float) -> None:
        s, c = self.model.state, self.cfg.cpu
        want_run = True
        if s.freq_fraction < 1.0:  # throttled or a lower power mode: the work runs that fraction
            phase = (now % c.throttle_period_s) / c.throttle_period_s
            want_run = phase < s.freq_fraction
        if not want_run:
            signal_tree(os.getpid(), signal.SIGSTOP)
        elif not self._running:
            signal_tree(os.getpid(), signal.SIGCONT)
        self._running = want_run

    def _write_sysfs(self) -> None:
        with self.lock:
            m, s = self.model, self.model.state
            pw = self.cfg.power
            now = (s.time_s, s.energy_j)
            last = self._last_energy
            self._last_energy = now
            if last is None or now[0] <= last[0]:
                total = s.power_w or m.load_power(s.busy_cores)
            else:  # mean power over the refresh window, as the INA3221 averages
                total = (now[1] - last[1]) / (now[0] - last[0])
            idle = min(total, pw.idle_w)
            active = max(0.0, total - idle)
            hwmon = self.sandbox.host_path(HWMON_DIR)
            for rail in self.jcfg.rails:
                watts = rail.idle_share * idle + rail.active_share * active
                bus_mv, ma = ina3221_reading(rail, self.jcfg.ina3221, watts, self._rng)
                self._put(hwmon / f"in{rail.channel}_input", str(bus_mv))
                self._put(hwmon / f"curr{rail.channel}_input", str(ma))
            for n, zone in enumerate(self.cfg.thermal.zones):
                self._put(self.sandbox.thermal_zone_dir(n) / "temp",
                          str(int(round(m.zone_temp_c(zone.source) * 1000))))
            c = self.cfg.cpu
            cap = int(c.max_freq_khz * s.freq_fraction)
            util = min(1.0, s.busy_cores / max(1, self.ncpu) * 1.25)
            floor = cap if self.pinned else c.min_freq_khz
            cur = cap if self.pinned else int(c.min_freq_khz + (max(cap, c.min_freq_khz) - c.min_freq_khz) * util)
            cur -= cur % 1000
            cpu = self.sandbox.host_path("/sys/devices/system/cpu")
            for n in range(self.ncpu):
                fdir = cpu / f"cpu{n}/cpufreq"
                self._put(fdir / "scaling_cur_freq", str(cur))
                self._put(fdir / "cpuinfo_cur_freq", str(cur))
                self._put(fdir / "scaling_max_freq", str(cap))
                self._put(fdir / "scaling_min_freq", str(floor))
                self._put(fdir / "cpuinfo_max_freq", str(c.max_freq_khz))
                self._put(fdir / "cpuinfo_min_freq", str(c.min_freq_khz))
        self._write_memory()

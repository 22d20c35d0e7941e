"""The model thread of the virtual Jetson: the phone's model, Jetson sensors.

The physics is the phone's (:mod:`melt.virtual.physics`: power from the real
CPU use of the processes its SSH sessions run, two-node heat, throttling),
without a screen or a battery. What it writes differs:

- INA3221 rails under hwmon (``inN_input`` bus mV, ``currN_input`` mA): each
  rail carries its share of the idle and the CPU power, averaged over the
  sensor's refresh window (``1 / rates.sysfs_hz``), as the INA3221's averaging
  does, and rounded to whole mA;
- thermal zones under ``/sys/devices/virtual/thermal``;
- cpufreq files, capped by the ``nvpmodel`` mode and by throttling, pinned at
  the maximum while ``jetson_clocks`` is on.

The truth log (``/data/melt-virtual/truth.csv``) has the phone's columns.
"""

from __future__ import annotations

import os
import signal

from melt.virtual.jetson_config import HWMON_DIR, VirtualJetsonConfig
from melt.virtual.physics import PhysicsModel
from melt.virtual.proctree import signal_tree
from melt.virtual.sandbox import Sandbox
from melt.virtual.simulator import Simulator, _read


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

    def _sync_inputs(self) -> None:
        super()._sync_inputs()
        state = self.sandbox.state_path("state")
        mode = _read(state / "nvpmodel")
        if mode and mode.isdigit():
            self.model.mode_fraction = self.jcfg.mode(int(mode)).freq_fraction
        self.pinned = _read(state / "jetson_clocks") == "1"

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
                self._put(hwmon / f"in{rail.channel}_input", str(rail.voltage_mv))
                self._put(hwmon / f"curr{rail.channel}_input", str(int(round(watts / rail.voltage_mv * 1e6))))
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

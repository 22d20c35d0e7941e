"""The physical model of a virtual phone: power, heat, battery. Pure: no I/O.

One :meth:`PhysicsModel.step` advances the state by ``dt`` seconds given how
many cores were busy (from the real CPU time of the processes the phone runs):

- power ``P = idle + core_active * busy_cores * (f/f_max)**(k-1) + screen``;
- heat: two RC nodes. The SoC die takes the idle and CPU power and passes
  heat to the body through ``R_sb``; the body (where the battery sits) takes
  the screen power and the cell's I**2*R loss and loses heat to ambient
  through ``R_ba``;
- fuel gauge: the load draws ``I`` from the cell so that ``(OCV - I*R) * I = P``;
  charge falls by ``I*dt``, the terminal voltage sags by ``I*R``; a connected
  charger pushes current back in (tapering above 90%);
- throttling: above ``throttle_temp_c`` the frequency cap drops to
  ``throttle_freq_fraction * f_max`` until the die cools below ``release_temp_c``
  (or it is forced on/off).

``energy_j`` accumulates the exact integral of ``P`` (rectangle rule at the
model tick, with ``P`` constant over each tick): it is the truth melt's own
measurements are checked against.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

from melt.virtual.config import VirtualPhoneConfig


@dataclass
class PhysicsState:
    """The model's state after the last step (SI units unless named)."""

    time_s: float = 0.0  # model time since start
    energy_j: float = 0.0  # cumulative energy consumed by the load
    power_w: float = 0.0  # load power over the last step
    busy_cores: float = 0.0  # CPU-seconds per second of the device's processes
    soc_c: float = 25.0  # die temperature
    body_c: float = 25.0  # body / battery temperature
    charge_c: float = 0.0  # coulombs left in the cell
    current_a: float = 0.0  # cell current, positive when discharging
    voltage_v: float = 0.0  # cell terminal voltage
    freq_fraction: float = 1.0  # frequency cap / f_max
    throttled: bool = False
    screen_on: bool = True
    brightness: int = 128  # 0..255
    charger_online: bool = False  # a charger is plugged in
    charging_enabled: bool = True  # the charger input is not suspended


class PhysicsModel:
    """Advances a :class:`PhysicsState` in time; see the module docstring."""

    def __init__(self, config: VirtualPhoneConfig):
        self.cfg = config
        b = config.battery
        self.capacity_c = b.capacity_mah * 3.6  # mAh -> coulombs
        self._ocv_pct = [pct for pct, _ in b.ocv_curve]
        self._ocv_v = [v for _, v in b.ocv_curve]
        self.force_throttle: bool | None = None
        amb = config.thermal.ambient_c
        self.state = PhysicsState(
            soc_c=amb,
            body_c=amb,
            charge_c=self.capacity_c * b.initial_level_pct / 100.0,
            charger_online=b.charger_connected,
        )
        self.state.voltage_v = self.ocv(self.level_fraction)

    # ------------------------------------------------------------ battery
    @property
    def level_fraction(self) -> float:
        """State of charge, 0..1."""
        return min(1.0, max(0.0, self.state.charge_c / self.capacity_c))

    @property
    def level_pct(self) -> int:
        """Battery level as Android shows it (integer percent)."""
        return int(round(self.level_fraction * 100))

    def ocv(self, fraction: float) -> float:
        """Open-circuit voltage (V) at state of charge ``fraction`` (0..1)."""
        pct = min(100.0, max(0.0, fraction * 100.0))
        i = bisect.bisect_right(self._ocv_pct, pct)
        if i <= 0:
            return self._ocv_v[0]
        if i >= len(self._ocv_pct):
            return self._ocv_v[-1]
        p0, p1 = self._ocv_pct[i - 1], self._ocv_pct[i]
        v0, v1 = self._ocv_v[i - 1], self._ocv_v[i]
        return v0 + (v1 - v0) * (pct - p0) / (p1 - p0)

    def charging(self) -> bool:
        """True when current flows into the cell from a charger."""
        s = self.state
        return s.charger_online and s.charging_enabled and self.level_fraction < 0.999

    def battery_status(self) -> str:
        """The sysfs ``status`` word: Charging, Discharging, Full or Not charging."""
        s = self.state
        if s.charger_online and self.level_fraction >= 0.999:
            return "Full"
        if self.charging():
            return "Charging"
        if s.charger_online and not s.charging_enabled:
            return "Not charging"
        return "Discharging"

    # ------------------------------------------------------------ power
    def load_power(self, busy_cores: float) -> float:
        """Power (W) drawn at ``busy_cores`` with the current frequency and screen."""
        pw, s = self.cfg.power, self.state
        active = pw.core_active_w * busy_cores * s.freq_fraction ** (pw.dynamic_exponent - 1)
        screen = 0.0
        if s.screen_on:
            screen = pw.screen_base_w + (pw.screen_max_w - pw.screen_base_w) * s.brightness / 255
        return pw.idle_w + active + screen

    def set_temperature(self, celsius: float, node: str = "all") -> None:
        """Inject heat: set the die (``soc``), the body (``body``) or both (``all``)."""
        if node in ("soc", "all"):
            self.state.soc_c = celsius
        if node in ("body", "all"):
            self.state.body_c = celsius

    def _update_throttle(self) -> None:
        c, s = self.cfg.cpu, self.state
        if self.force_throttle is not None:
            s.throttled = self.force_throttle
        elif s.soc_c >= c.throttle_temp_c:
            s.throttled = True
        elif s.soc_c <= c.release_temp_c:
            s.throttled = False
        s.freq_fraction = c.throttle_freq_fraction if s.throttled else 1.0

    def step(self, dt: float, busy_cores: float) -> PhysicsState:
        """Advance by ``dt`` seconds with ``busy_cores`` CPU-seconds per second."""
        s, th, b = self.state, self.cfg.thermal, self.cfg.battery
        if dt <= 0:
            return s
        self._update_throttle()
        s.busy_cores = max(0.0, busy_cores)
        p_load = self.load_power(s.busy_cores)
        pw = self.cfg.power
        p_screen = 0.0
        if s.screen_on:
            p_screen = pw.screen_base_w + (pw.screen_max_w - pw.screen_base_w) * s.brightness / 255

        # cell: solve (ocv - I R) I = P for the load current
        ocv, r = self.ocv(self.level_fraction), b.internal_resistance_ohm
        if r > 0:
            disc = max(0.0, ocv * ocv - 4 * r * p_load)
            i_load = (ocv - math.sqrt(disc)) / (2 * r)
        else:
            i_load = p_load / ocv
        i_charge = 0.0
        if self.charging():
            taper = min(1.0, (1.0 - self.level_fraction) / 0.1)
            i_charge = b.charge_current_ma / 1000.0 * max(0.05, taper)
        current = i_load - i_charge
        s.current_a = current
        s.voltage_v = ocv - current * r
        s.charge_c = min(self.capacity_c, max(0.0, s.charge_c - current * dt))

        # heat: die <- idle + cpu; body <- screen + I^2 R; body -> ambient
        q_soc_body = (s.soc_c - s.body_c) / th.soc_to_body_k_per_w
        q_body_amb = (s.body_c - th.ambient_c) / th.body_to_ambient_k_per_w
        s.soc_c += (p_load - p_screen - q_soc_body) * dt / th.soc_heat_capacity_j_per_k
        s.body_c += (
            (q_soc_body + p_screen + current * current * r - q_body_amb)
            * dt
            / th.body_heat_capacity_j_per_k
        )

        s.power_w = p_load
        s.energy_j += p_load * dt
        s.time_s += dt
        return s

    def zone_temp_c(self, source: str) -> float:
        """Temperature (degC) of a model node named in a thermal zone's ``source``."""
        s, th = self.state, self.cfg.thermal
        if source == "soc":
            return s.soc_c
        if source == "body":
            return s.body_c
        if source == "skin":
            return th.ambient_c + th.skin_fraction * (s.body_c - th.ambient_c)
        return th.ambient_c

    def thermal_status(self) -> int:
        """Android thermal status 0 (none) .. 6 (shutdown) from the die temperature."""
        t, c = self.state.soc_c, self.cfg.cpu
        steps = [c.release_temp_c, c.throttle_temp_c, c.throttle_temp_c + 10,
                 c.throttle_temp_c + 20, c.throttle_temp_c + 30, c.throttle_temp_c + 40]
        return sum(1 for x in steps if t >= x)

"""The virtual phone's sensors: a fuel gauge and ODPM energy counters. Pure: no I/O.

:class:`FuelGauge` turns the model's exact cell current and voltage into what
a real gauge reports: readings that change only every ``update_period_s``,
each the mean over the last ``averaging_s`` seconds (or the instantaneous
value), with a gain error, Gaussian noise and the rounding of its unit.

:class:`OdpmCounters` accumulates the exact energy of named rails and shows it
as the Pixel 6+ ``iio:deviceN/energy_value`` files do: cumulative µW·s per
channel, refreshed every ``refresh_period_s``, each block stamped with the
refresh time in ms since boot::

    t=349894
    CH0(T=349894)[S4M_VDD_CPUCL0], 5578756
"""

from __future__ import annotations

import random
from collections import deque

from melt.virtual.config import GaugeParams, OdpmParams


class FuelGauge:
    """Readings of the battery's fuel gauge (see the module doc)."""

    def __init__(self, params: GaugeParams, *, sign: int = -1):
        self.p = params
        self.sign = sign  # -1: negative while discharging (AOSP)
        self._rng = random.Random(params.seed)
        self._window: deque[tuple[float, float, float, float]] = deque()  # (t_end, dt, I, V)
        self._next: float | None = None
        self.current_raw = 0  # in the gauge's unit, with its sign
        self.voltage_uv = 0
        self.updated_s: float | None = None

    def feed(self, now: float, dt: float, current_a: float, voltage_v: float) -> bool:
        """One model tick ending at ``now``; True when the readings changed."""
        self._window.append((now, dt, current_a, voltage_v))
        keep = max(self.p.averaging_s, dt)
        while self._window and self._window[0][0] <= now - keep - 1e-9 and len(self._window) > 1:
            self._window.popleft()
        if self._next is None:
            self._next = now
        if now < self._next:
            return False
        while self._next <= now:
            self._next += self.p.update_period_s
        if self.p.averaging_s > 0:
            total = sum(w[1] for w in self._window) or 1.0
            i = sum(w[1] * w[2] for w in self._window) / total
            v = sum(w[1] * w[3] for w in self._window) / total
        else:
            i, v = current_a, voltage_v
        ua = i * 1e6 * (1.0 + self.p.gain_error_pct / 100.0)
        if self.p.noise_ua > 0:
            ua += self._rng.gauss(0.0, self.p.noise_ua)
        ua *= self.sign
        self.current_raw = int(round(ua / 1000.0)) if self.p.unit == "mA" else int(round(ua))
        self.voltage_uv = int(round(v * 1e6))
        self.updated_s = now
        return True


class OdpmCounters:
    """Cumulative rail energies and their ``energy_value`` files (see the module doc)."""

    def __init__(self, params: OdpmParams):
        self.p = params
        self.energy_uws = [0.0] * len(params.rails)
        self._next: float | None = None
        self.shown: list[str] = []  # one energy_value text per iio device

    def feed(self, boot_s: float, dt: float, parts_w: dict[str, float], shares: dict[str, float]) -> bool:
        """Add one tick of power (``parts_w``: cpu/idle/screen watts); True when the files change.

        ``shares`` is the total share of every source over all rails, so the
        rails of one source always add up to its power.
        """
        for n, rail in enumerate(self.p.rails):
            total = shares.get(rail.source) or 1.0
            self.energy_uws[n] += parts_w.get(rail.source, 0.0) * rail.share / total * dt * 1e6
        if self._next is None:
            self._next = boot_s
        if boot_s < self._next:
            return False
        while self._next <= boot_s:
            self._next += self.p.refresh_period_s
        stamp = int(boot_s * 1000)
        per = self.p.channels_per_device
        texts = []
        for first in range(0, len(self.p.rails), per):
            lines = [f"t={stamp}"]
            for ch, n in enumerate(range(first, min(first + per, len(self.p.rails)))):
                lines.append(f"CH{ch}(T={stamp})[{self.p.rails[n].name}], {int(self.energy_uws[n])}")
            texts.append("\n".join(lines))
        self.shown = texts
        return True


def source_shares(params: OdpmParams) -> dict[str, float]:
    """Sum of the rail shares of each power source (to normalise them)."""
    out: dict[str, float] = {}
    for rail in params.rails:
        out[rail.source] = out.get(rail.source, 0.0) + rail.share
    return out

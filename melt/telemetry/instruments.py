"""External power instruments sampled on the host, aligned to the device clock.

An :class:`Instrument` samples on the host while a job runs: ``start()``
before the runner starts, ``stop()`` after it ends, returning an
:class:`InstrumentTrace` stamped with the host's clock (``time.time()``).
:func:`align` moves it onto the job's trace clock with the measured
host/device offset (:mod:`melt.telemetry.clock`).

- :class:`MonsoonInstrument`: a Monsoon power monitor through its Python
  library (``pip install Monsoon``), at its native rate (5 kHz on the HVPM).
- :class:`FakeInstrument`: a power function of host time, sampled at any
  rate, for tests and demos.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable, Protocol, runtime_checkable

import numpy as np

from melt.errors import MeltError


class InstrumentError(MeltError):
    """An instrument is missing, not connected, or failed while sampling."""


@dataclass
class InstrumentTrace:
    """Samples of one instrument: host times (s) and power (W)."""

    name: str
    t_host_s: np.ndarray
    power_w: np.ndarray
    rate_hz: float | None = None

    def __len__(self) -> int:
        return int(self.t_host_s.size)


@runtime_checkable
class Instrument(Protocol):
    """A power instrument sampling on the host."""

    name: str

    def start(self) -> None:
        """Begin sampling (returns at once; sampling goes on in the background)."""

    def stop(self) -> InstrumentTrace:
        """Stop sampling and return everything sampled since :meth:`start`."""


def align(trace: InstrumentTrace, offset_s: float, t0_device_s: float) -> tuple[np.ndarray, np.ndarray]:
    """(t_s on the job's trace clock, power W): ``t_s = t_host + offset - t0``.

    ``offset_s`` is device minus host (:class:`melt.telemetry.clock.ClockOffset`),
    ``t0_device_s`` the device time of the job's ``begin`` mark.
    """
    return trace.t_host_s + offset_s - t0_device_s, trace.power_w


class FakeInstrument:
    """Samples ``power(t_host_s)`` at ``rate_hz`` between start and stop (no thread).

    The samples are generated on :meth:`stop` at the instants a real monitor
    would have produced them, from the host times :meth:`start` and
    :meth:`stop` were called at.
    """

    def __init__(self, power: Callable[[np.ndarray], np.ndarray], *, rate_hz: float = 5000.0,
                 name: str = "fake", clock: Callable[[], float] = time.time):
        self.name = name
        self.power = power
        self.rate_hz = rate_hz
        self.clock = clock
        self._t0: float | None = None

    def start(self) -> None:
        self._t0 = self.clock()

    def stop(self) -> InstrumentTrace:
        if self._t0 is None:
            raise InstrumentError(f"{self.name}: stop() before start()")
        t1 = self.clock()
        n = max(2, int((t1 - self._t0) * self.rate_hz) + 1)
        t = self._t0 + np.arange(n) / self.rate_hz
        self._t0 = None
        return InstrumentTrace(self.name, t, np.asarray(self.power(t), dtype=float), self.rate_hz)


class MonsoonInstrument:
    """A Monsoon HVPM/LVPM through the ``Monsoon`` Python library.

    The device under test is powered from the monitor's main output at
    ``voltage_v``; main-channel current (mA) times voltage (V) gives the
    power. Samples come in batches from a background thread; their
    timestamps (seconds since sampling started) are anchored to the host
    clock read when sampling started, so the anchor's error (USB latency,
    a few ms) adds to the clock offset's uncertainty.

    Raises :class:`InstrumentError` when the library is not installed or no
    monitor is attached.
    """

    def __init__(self, *, serial: int | None = None, voltage_v: float = 4.2, model: str = "HVPM",
                 batch: int = 5000, name: str = "monsoon"):
        self.name = name
        self.serial = serial
        self.voltage_v = voltage_v
        self.model = model
        self.batch = batch
        self._engine = None
        self._monitor = None
        self._thread: threading.Thread | None = None
        self._halt = threading.Event()
        self._t: list[float] = []
        self._i: list[float] = []
        self._v: list[float] = []
        self._anchor = 0.0
        self._error: BaseException | None = None

    def _open(self) -> None:
        try:
            import Monsoon.sampleEngine as sample_engine  # noqa: N813
            if self.model.upper() == "LVPM":
                import Monsoon.LVPM as pm  # noqa: N813
            else:
                import Monsoon.HVPM as pm  # noqa: N813
        except ImportError:
            raise InstrumentError(
                "the Monsoon library is not installed: pip install Monsoon (it also needs pyusb "
                "and access to the monitor's USB device)"
            ) from None
        try:
            monitor = pm.Monsoon()
            monitor.setup_usb(self.serial)
            monitor.setVout(self.voltage_v)
            engine = sample_engine.SampleEngine(monitor)
            engine.disableCSVOutput()
            engine.ConsoleOutput(False)
            engine.enableChannel(sample_engine.channels.MainCurrent)
            engine.enableChannel(sample_engine.channels.MainVoltage)
        except Exception as exc:  # the library raises bare USB errors
            raise InstrumentError(f"cannot open the Monsoon monitor: {exc}") from None
        self._monitor, self._engine, self._channels = monitor, engine, sample_engine.channels

    def start(self) -> None:
        if self._engine is None:
            self._open()
        self._t, self._i, self._v = [], [], []
        self._halt.clear()
        self._error = None
        self._engine.periodicStartSampling()  # type: ignore[union-attr]
        self._anchor = time.time()
        self._thread = threading.Thread(target=self._collect, name="monsoon", daemon=True)
        self._thread.start()

    def _collect(self) -> None:
        ch = self._channels
        try:
            while not self._halt.is_set():
                samples = self._engine.periodicCollectSamples(self.batch)  # type: ignore[union-attr]
                self._t.extend(samples[ch.timeStamp])
                self._i.extend(samples[ch.MainCurrent])
                self._v.extend(samples[ch.MainVoltage])
        except Exception as exc:  # reported by stop()
            self._error = exc

    def stop(self) -> InstrumentTrace:
        self._halt.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        try:
            self._engine.periodicStopSampling()  # type: ignore[union-attr]
        except Exception:
            pass
        if self._error is not None:
            raise InstrumentError(f"Monsoon sampling failed: {self._error}")
        t = self._anchor + np.asarray(self._t, dtype=float)
        power = np.asarray(self._i, dtype=float) * 1e-3 * np.asarray(self._v, dtype=float)
        rate = (t.size - 1) / (t[-1] - t[0]) if t.size > 1 and t[-1] > t[0] else None
        return InstrumentTrace(self.name, t, power, rate)

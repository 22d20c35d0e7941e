"""Parameters of a virtual phone: identity, physical model, update rates.

They come from the ``virtual:`` section of a device config
(``device_configs/virtual-phone.yaml``); every field has a default, so an
empty section (or no file at all) gives a plausible mid-range phone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from melt.errors import ConfigError


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PowerParams(_Frozen):
    """Electrical power drawn by the phone (watts)."""

    idle_w: float = Field(0.35, ge=0, description="SoC, radios and memory at rest, screen off")
    core_active_w: float = Field(
        1.1, ge=0, description="extra power of one fully busy core at its maximum frequency"
    )
    dynamic_exponent: float = Field(
        2.0, ge=1, description="active power of a busy second scales as (f/f_max)**(exponent-1)"
    )
    screen_base_w: float = Field(0.15, ge=0, description="screen on at brightness 0")
    screen_max_w: float = Field(0.9, ge=0, description="screen on at brightness 255")


class GaugeParams(_Frozen):
    """What the fuel gauge reports, as a real one does (see docs/virtual-devices.md).

    Every ``update_period_s`` it latches the mean cell current and voltage of
    the last ``averaging_s`` seconds (0: the instantaneous value), adds a
    gain error and Gaussian noise, rounds to its unit and writes
    ``current_now``/``current_avg``/``voltage_now``.

    The defaults are the gauge of the shipped virtual phone
    (``device_configs/virtual-phone.yaml``): noisy and off by a gain. A
    sensor without noise or gain error exists only by name, :meth:`ideal`.
    """

    update_period_s: float = Field(0.25, gt=0, le=60, description="how often the readings change")
    averaging_s: float = Field(0.0, ge=0, le=60, description="window the current is averaged over")
    noise_ua: float = Field(2000.0, ge=0, description="1-sigma noise added to each current reading (uA)")
    gain_error_pct: float = Field(0.4, ge=-20, le=20, description="reading = true * (1 + pct/100)")
    unit: Literal["uA", "mA"] = Field("uA", description="unit of current_now / current_avg")
    seed: int = Field(0, description="seed of the noise (runs are repeatable)")

    @classmethod
    def ideal(cls, **fields: object) -> "GaugeParams":
        """A gauge with no noise, no gain error and no averaging (``fields`` override the rest).

        No real gauge is like this: a test that uses it says why.
        """
        return cls.model_validate({"averaging_s": 0.0, "noise_ua": 0.0, "gain_error_pct": 0.0, **fields})


class ChargerParams(_Frozen):
    """The USB charger and the switch that can cut it."""

    switch: Literal["input_suspend", "charging_enabled", "none"] = Field(
        "input_suspend", description="sysfs file that really stops charging (none: only "
                                     "`dumpsys battery unplug`, which changes what Android reports)")


class OdpmRail(_Frozen):
    """One ODPM channel: a named rail carrying a share of one part of the model's power."""

    name: str
    source: Literal["cpu", "idle", "screen"]
    share: float = Field(1.0, ge=0, le=1)


class OdpmParams(_Frozen):
    """On-Device Power Monitor counters (Pixel 6+ ``iio:deviceN/energy_value`` layout)."""

    enabled: bool = False
    refresh_period_s: float = Field(0.05, gt=0, le=10, description="how often the counters refresh")
    rails: list[OdpmRail] = [
        OdpmRail(name="S4M_VDD_CPUCL0", source="cpu", share=0.2),
        OdpmRail(name="S3M_VDD_CPUCL1", source="cpu", share=0.3),
        OdpmRail(name="S2M_VDD_CPUCL2", source="cpu", share=0.5),
        OdpmRail(name="S5M_VDD_INT", source="idle", share=0.4),
        OdpmRail(name="S9M_VDD_DDR", source="idle", share=0.3),
        OdpmRail(name="VSYS_PWR_MODEM", source="idle", share=0.3),
        OdpmRail(name="VSYS_PWR_DISPLAY", source="screen", share=1.0),
    ]
    channels_per_device: int = Field(8, ge=1, le=16, description="rails per iio device (Pixel: 8)")


class BatteryParams(_Frozen):
    """Fuel gauge and cell."""

    capacity_mah: float = Field(4500, gt=0)
    initial_level_pct: float = Field(80, ge=0, le=100)
    internal_resistance_ohm: float = Field(0.15, ge=0)
    #: open-circuit voltage at state of charge: [[pct, volts], ...], increasing pct
    ocv_curve: list[tuple[float, float]] = [
        (0, 3.40), (5, 3.60), (20, 3.70), (50, 3.80), (80, 4.00), (100, 4.35)
    ]
    current_sign: Literal["negative-discharging", "positive-discharging"] = "negative-discharging"
    charger_connected: bool = Field(False, description="USB charger plugged in at start")
    charge_current_ma: float = Field(1500, ge=0)
    gauge: GaugeParams = GaugeParams()
    charger: ChargerParams = ChargerParams()


class ThermalZoneParams(_Frozen):
    """One ``/sys/class/thermal/thermal_zoneN`` and which model node it shows."""

    type: str
    source: Literal["soc", "body", "skin", "ambient"]


class ThermalParams(_Frozen):
    """Two-node RC model: SoC die -> phone body (battery) -> ambient air."""

    ambient_c: float = 25.0
    soc_heat_capacity_j_per_k: float = Field(6.0, gt=0)
    soc_to_body_k_per_w: float = Field(3.0, gt=0)
    body_heat_capacity_j_per_k: float = Field(60.0, gt=0)
    body_to_ambient_k_per_w: float = Field(8.0, gt=0)
    skin_fraction: float = Field(
        0.8, ge=0, le=1, description="skin = ambient + fraction * (body - ambient)"
    )
    zones: list[ThermalZoneParams] = [
        ThermalZoneParams(type="cpu-0-0", source="soc"),
        ThermalZoneParams(type="battery", source="body"),
        ThermalZoneParams(type="skin", source="skin"),
    ]


class CpuParams(_Frozen):
    """cpufreq files and throttling. One cluster per host core (the real ones run the work)."""

    max_freq_khz: int = Field(2400000, gt=0)
    min_freq_khz: int = Field(300000, gt=0)
    throttle_temp_c: float = Field(45.0, description="SoC temperature where throttling starts")
    release_temp_c: float = Field(40.0, description="SoC temperature where it stops")
    throttle_freq_fraction: float = Field(
        0.5, gt=0, le=1, description="f/f_max while throttled; the work really runs this fraction of the time"
    )
    throttle_period_s: float = Field(0.1, gt=0, description="SIGSTOP/SIGCONT duty-cycle period")


class RatesParams(_Frozen):
    """How often the model runs and what it updates (hertz)."""

    tick_hz: float = Field(100.0, gt=0, le=1000, description="model step and truth-log rate")
    cpu_sample_hz: float = Field(20.0, gt=0, le=200, description="reads of the process tree's CPU time")
    sysfs_hz: float = Field(10.0, gt=0, le=200, description="updates of the sysfs files")


class VirtualPhoneConfig(_Frozen):
    """Everything a virtual phone needs; defaults describe a mid-range phone."""

    port: int = Field(15555, ge=0, le=65535, description="default loopback port")
    abi: str = Field("arm64-v8a", description="the CPU ABI it reports and runs (arm64-v8a under "
                                              "qemu-user on an x86-64 machine, or x86_64)")
    props: dict[str, str] = {}
    power: PowerParams = PowerParams()
    battery: BatteryParams = BatteryParams()
    thermal: ThermalParams = ThermalParams()
    cpu: CpuParams = CpuParams()
    rates: RatesParams = RatesParams()
    odpm: OdpmParams = OdpmParams()

    @model_validator(mode="after")
    def _check(self) -> "VirtualPhoneConfig":
        from melt.virtual.emulation import SUPPORTED_ABIS

        if self.abi not in SUPPORTED_ABIS:
            raise ValueError(f"abi must be one of {', '.join(SUPPORTED_ABIS)} (got {self.abi!r})")
        abi_props = sorted(k for k in self.props if k.startswith("ro.product.cpu.abi"))
        if abi_props:
            raise ValueError(f"props: set abi instead of {', '.join(abi_props)}")
        if self.cpu.release_temp_c > self.cpu.throttle_temp_c:
            raise ValueError("cpu.release_temp_c must be <= cpu.throttle_temp_c")
        pcts = [pct for pct, _ in self.battery.ocv_curve]
        if len(pcts) < 2 or pcts != sorted(pcts):
            raise ValueError("battery.ocv_curve needs >= 2 points with increasing pct")
        return self

    def all_props(self, port: int) -> dict[str, str]:
        """Default props, then the config's, then the ones that mark simulation."""
        props = dict(DEFAULT_PROPS)
        props.update(self.props)
        props.setdefault("ro.serialno", f"VIRTUAL{port}")
        props["ro.product.cpu.abi"] = props["ro.product.cpu.abilist"] = self.abi
        props["ro.product.cpu.abilist64"] = self.abi  # the ABIs it supports are 64-bit only
        props["ro.melt.virtual"] = "1"
        return dict(sorted(props.items()))


DEFAULT_PROPS: dict[str, str] = {
    "ro.product.name": "melt_virtual",
    "ro.product.model": "Melt Virtual Phone",
    "ro.product.device": "melt_virtual",
    "ro.product.brand": "melt",
    "ro.product.manufacturer": "melt",
    "ro.product.board": "virtual",
    "ro.hardware": "virtual",
    "ro.board.platform": "virtual",
    "ro.build.version.release": "14",
    "ro.build.version.sdk": "34",
    "ro.build.id": "MELT.VIRTUAL",
    "ro.build.type": "userdebug",
    "ro.build.tags": "test-keys",
    "ro.build.fingerprint": "melt/melt_virtual/melt_virtual:14/MELT.VIRTUAL/1:userdebug/test-keys",
    "ro.adb.secure": "0",
    "ro.debuggable": "1",
    "ro.kernel.qemu": "0",
    "sys.boot_completed": "1",
    "dev.bootcomplete": "1",
    "persist.sys.timezone": "UTC",
}


def load_config(path: str | Path | None) -> VirtualPhoneConfig:
    """Read the ``virtual:`` section of a device config; ``None`` gives the defaults.

    Raises :class:`melt.errors.ConfigError` with field paths when it does not validate.
    """
    if path is None:
        return VirtualPhoneConfig()
    from melt.config.loader import read_yaml  # one-line errors for missing files and bad YAML

    path = Path(path)
    doc = read_yaml(path)
    section = doc.get("virtual", {})
    if not isinstance(section, dict):
        raise ConfigError(str(path), ["virtual: must be a mapping"])
    try:
        return VirtualPhoneConfig.model_validate(section)
    except ValidationError as exc:
        from melt.config.errors import problems_from

        raise ConfigError(str(path), [f"virtual.{p}" for p in problems_from(exc)]) from None

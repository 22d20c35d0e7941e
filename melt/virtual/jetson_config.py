"""Parameters of the virtual Jetson: the phone's physical model plus rails and power modes.

They come from the ``virtual:`` section of ``device_configs/virtual-jetson.yaml``;
every field has a default (an Orin Nano-like board on a heatsink).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, ValidationError, model_validator

from melt.errors import ConfigError
from melt.virtual.config import (
    BatteryParams,
    CpuParams,
    PowerParams,
    RatesParams,
    ThermalParams,
    ThermalZoneParams,
    VirtualPhoneConfig,
    _Frozen,
)

HWMON_DIR = "/sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon3"


class RailParams(_Frozen):
    """One INA3221 channel: which share of the model's power flows through it, and how it reads.

    The supply's bus sits at ``voltage_mv`` with no load and sags by the
    current times ``supply_mohm``; the shunt reading is off by
    ``gain_error_pct`` (the shunt resistor's tolerance, as on an uncalibrated board).
    """

    label: str
    channel: int = Field(ge=1, le=3)
    idle_share: float = Field(ge=0, le=1, description="share of the idle power")
    active_share: float = Field(ge=0, le=1, description="share of the CPU (active) power")
    voltage_mv: int = Field(5000, gt=0, description="bus voltage with no load (mV)")
    supply_mohm: float = Field(40.0, ge=0, le=1000, description="the supply's resistance: the bus "
                                                                "sags by I x R under load (mOhm)")
    gain_error_pct: float = Field(0.5, ge=-20, le=20, description="current reading = true * (1 + pct/100)")


class Ina3221Params(_Frozen):
    """What the INA3221 adds to every reading: noise and the rounding of its registers."""

    noise_ma: float = Field(4.0, ge=0, description="1-sigma noise of a current reading (mA)")
    bus_lsb_mv: int = Field(8, ge=1, description="step of a bus voltage reading (the INA3221's 8 mV)")
    seed: int = Field(0, description="seed of the noise (runs are repeatable)")


class MemoryParams(_Frozen):
    """The board's RAM as tegrastats shows it: its own total, not the host's."""

    total_mb: int = Field(7620, gt=0, description="RAM the OS sees (an 8 GB Orin Nano: 7620 MB)")
    baseline_used_mb: int = Field(1100, ge=0, description="used at rest (OS, services); the RSS of "
                                                          "the processes the board runs comes on top")
    swap_total_mb: int = Field(3810, ge=0)


class PowerModeParams(_Frozen):
    """One ``nvpmodel`` mode: its id, name and the CPU frequency cap it sets."""

    id: int = Field(ge=0)
    name: str
    freq_fraction: float = Field(1.0, gt=0, le=1)


class VirtualJetsonConfig(VirtualPhoneConfig):
    """Everything the virtual Jetson needs (``port`` is its sshd's loopback port)."""

    port: int = Field(15022, ge=0, le=65535, description="default loopback port of its sshd")
    model_name: str = "NVIDIA Jetson Orin Nano Developer Kit (melt virtual)"
    power: PowerParams = PowerParams(idle_w=4.6, core_active_w=1.3, dynamic_exponent=2.0,
                                     screen_base_w=0.0, screen_max_w=0.0)
    battery: BatteryParams = BatteryParams()  # unused: a board on a barrel jack
    thermal: ThermalParams = ThermalParams(
        ambient_c=25, soc_heat_capacity_j_per_k=25, soc_to_body_k_per_w=1.2,
        body_heat_capacity_j_per_k=150, body_to_ambient_k_per_w=1.5, skin_fraction=0.5,
        zones=[ThermalZoneParams(type="CPU-therm", source="soc"),
               ThermalZoneParams(type="GPU-therm", source="soc"),
               ThermalZoneParams(type="SOC0-therm", source="body"),
               ThermalZoneParams(type="tj-therm", source="soc")])
    cpu: CpuParams = CpuParams(max_freq_khz=1510400, min_freq_khz=115200, throttle_temp_c=85,
                               release_temp_c=80, throttle_freq_fraction=0.6)
    rates: RatesParams = RatesParams(tick_hz=100, cpu_sample_hz=20, sysfs_hz=20)
    rails: list[RailParams] = [
        RailParams(label="VDD_IN", channel=1, idle_share=1.0, active_share=1.0, voltage_mv=5080,
                   supply_mohm=45, gain_error_pct=0.6),
        RailParams(label="VDD_CPU_GPU_CV", channel=2, idle_share=0.25, active_share=0.85, voltage_mv=5064,
                   supply_mohm=30, gain_error_pct=-0.5),
        RailParams(label="VDD_SOC", channel=3, idle_share=0.35, active_share=0.08, voltage_mv=5064,
                   supply_mohm=30, gain_error_pct=0.3),
    ]
    ina3221: Ina3221Params = Ina3221Params()
    memory: MemoryParams = MemoryParams()
    power_modes: list[PowerModeParams] = [
        PowerModeParams(id=0, name="15W", freq_fraction=1.0),
        PowerModeParams(id=1, name="7W", freq_fraction=0.6),
    ]
    power_mode: int = Field(0, description="the mode at start (a restart is a reboot)")

    @model_validator(mode="after")
    def _modes(self) -> "VirtualJetsonConfig":
        ids = [m.id for m in self.power_modes]
        if not ids or self.power_mode not in ids:
            raise ValueError("power_mode must be one of power_modes[].id")
        channels = [r.channel for r in self.rails]
        if len(set(channels)) != len(channels):
            raise ValueError("rails[].channel must be unique")
        return self

    def mode(self, mode_id: int) -> PowerModeParams:
        """The power mode with id ``mode_id`` (the first one when there is none)."""
        return next((m for m in self.power_modes if m.id == mode_id), self.power_modes[0])


def load_jetson_config(path: str | Path | None) -> VirtualJetsonConfig:
    """Read the ``virtual:`` section of a device config; ``None`` gives the defaults."""
    if path is None:
        return VirtualJetsonConfig()
    from melt.config.loader import read_yaml

    doc = read_yaml(Path(path))
    section = doc.get("virtual", {})
    if not isinstance(section, dict):
        raise ConfigError(str(path), ["virtual: must be a mapping"])
    try:
        return VirtualJetsonConfig.model_validate(section)
    except ValidationError as exc:
        from melt.config.errors import problems_from

        raise ConfigError(str(path), [f"virtual.{p}" for p in problems_from(exc)]) from None

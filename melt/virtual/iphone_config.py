"""Parameters of the virtual iPhone, from the ``virtual:`` section of its device config.

Every field has a default: an iPhone 14 Pro on iOS 17 with melt's benchmark
app installed and tunneld running on the host.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, ValidationError

from melt.errors import ConfigError
from melt.virtual.config import _Frozen

#: iOS's thermal states (ProcessInfo.ThermalState), coolest first
THERMAL_STATES = ("nominal", "fair", "serious", "critical")


class IphoneThermalParams(_Frozen):
    """A one-node heat model: busy cores heat it, it cools towards ambient with ``cool_tau_s``."""

    heat_per_core_k_s: float = Field(0.25, ge=0, description="heating by one busy core (K/s)")
    cool_tau_s: float = Field(20.0, gt=0, description="time constant of cooling (s)")
    fair_k: float = Field(4.0, gt=0, description="rise over ambient at which the state turns fair (K)")
    serious_k: float = Field(9.0, gt=0)
    critical_k: float = Field(15.0, gt=0)


class IphoneEnergyParams(_Frozen):
    """The energy-impact score of a process: ``overhead + per_core * busy cores`` (unitless)."""

    per_core: float = Field(8.0, ge=0)
    overhead: float = Field(0.4, ge=0)


class VirtualIphoneConfig(_Frozen):
    port: int = Field(15556, ge=0, le=65535, description="loopback port of its services (0 picks one)")
    udid: str = "00008120-001A2B3C4D5E6F70"
    name: str = "Melt Virtual iPhone"
    product_type: str = "iPhone15,2"
    ios_version: str = "17.5.1"
    build: str = "21F90"
    preinstalled: list[str] = Field(["org.melt.bench"], description="bundle ids of the apps installed at start")
    locked: bool = False
    tunnel: bool = Field(True, description="the host's RemoteXPC tunnel is up (iOS 17+ need it for DVT)")
    tick_hz: float = Field(5.0, gt=0, le=100, description="model steps and energy-impact samples per second")
    thermal: IphoneThermalParams = IphoneThermalParams()
    energy: IphoneEnergyParams = IphoneEnergyParams()


def load_iphone_config(path: str | Path | None) -> VirtualIphoneConfig:
    """Read the ``virtual:`` section of a device config; ``None`` gives the defaults."""
    if path is None:
        return VirtualIphoneConfig()
    from melt.config.loader import read_yaml

    doc = read_yaml(Path(path))
    section = doc.get("virtual", {})
    if not isinstance(section, dict):
        raise ConfigError(str(path), ["virtual: must be a mapping"])
    try:
        return VirtualIphoneConfig.model_validate(section)
    except ValidationError as exc:
        from melt.config.errors import problems_from

        raise ConfigError(str(path), [f"virtual.{p}" for p in problems_from(exc)]) from None

"""Virtual devices that behave like real ones, for tests and demos (data is simulated).

The virtual Android phone speaks the ADB device protocol on a loopback port;
see :class:`melt.virtual.phone.VirtualPhone` and ``docs/virtual-devices.md``.
"""

from __future__ import annotations

__all__ = ["VirtualPhone"]


def __getattr__(name: str):
    if name == "VirtualPhone":
        from melt.virtual.phone import VirtualPhone

        return VirtualPhone
    raise AttributeError(name)

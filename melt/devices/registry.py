"""Open a device from its spec."""

from __future__ import annotations

from melt.config.specs import DeviceSpec
from melt.devices.base import Device
from melt.errors import UnknownNameError

#: device kind -> "module:Class"; imported only when used.
DEVICE_KINDS = {
    "local": "melt.devices.local:LocalDevice",
    "android": "melt.devices.android:AndroidDevice",
    "linux": "melt.devices.linux:LinuxDevice",
    "jetson": "melt.devices.linux:LinuxDevice",
    "ios": "melt.devices.ios:IosDevice",
    "endpoint": "melt.devices.endpoint:EndpointDevice",
}


def open_device(spec: DeviceSpec) -> Device:
    """A connected :class:`Device` for ``spec`` (raises ``TransportError`` if unreachable)."""
    import importlib

    target = DEVICE_KINDS.get(spec.kind)
    if target is None:
        raise UnknownNameError("device kind", spec.kind, list(DEVICE_KINDS))
    module, cls = target.split(":")
    device_cls = getattr(importlib.import_module(module), cls)
    if spec.kind == "local":
        from melt.transports.local import LocalTransport

        return device_cls(spec, LocalTransport())
    return device_cls.connect(spec)

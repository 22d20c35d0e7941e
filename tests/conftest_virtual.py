"""Reusable fixtures for the virtual phone and an isolated adb server.

Import them into a test folder's ``conftest.py``::

    from tests.conftest_virtual import adb_server, adb_serial, virtual_phone  # noqa: F401

- ``adb_server``: a real adb server on a free loopback port (session-wide),
  killed at the end; tests needing it are skipped when ``adb`` is missing.
- ``virtual_phone``: a started :class:`melt.virtual.phone.VirtualPhone` with
  its own state folder, stopped at teardown. Without a config, test phones
  report this machine's ABI and run its binaries natively (host builds, full
  speed); an arm64-v8a phone runs the arm64 build under qemu-user (give it
  ``VirtualPhoneConfig()``, whose ABI is arm64-v8a).
- ``adb_serial``: the phone connected to the server (``adb connect``); its serial.
- ``virtual_phone_factory``: call it for more phones (all stopped at teardown).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import pytest

from melt.devices.abi import host_abi
from melt.virtual.config import VirtualPhoneConfig
from melt.virtual.phone import VirtualPhone
from melt.virtual.testing import AdbServer, adb_available
from melt.virtual.testing import adb_server as _adb_server
from tests.helpers import need


@pytest.fixture(scope="session")
def adb_server() -> Iterator[AdbServer]:
    need(adb_available(), "adb (apt-get install adb)")
    with _adb_server() as server:
        yield server


@pytest.fixture
def virtual_phone_factory(tmp_path: Path) -> Iterator[Callable[..., VirtualPhone]]:
    phones: list[VirtualPhone] = []

    def make(config=None, *, port: int = 0) -> VirtualPhone:
        if config is None:
            config = VirtualPhoneConfig(abi=host_abi())
        phone = VirtualPhone(config, port=port, state_dir=tmp_path / f"virtual-{len(phones)}")
        phones.append(phone)
        phone.start()
        return phone

    yield make
    for phone in phones:
        phone.stop()


@pytest.fixture
def virtual_phone(virtual_phone_factory: Callable[..., VirtualPhone]) -> VirtualPhone:
    return virtual_phone_factory()


@pytest.fixture
def adb_serial(adb_server: AdbServer, virtual_phone: VirtualPhone) -> Iterator[str]:
    serial = adb_server.connect(virtual_phone.address)
    yield serial
    adb_server.run("disconnect", serial, timeout=10)

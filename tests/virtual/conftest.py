"""Fixtures of the virtual-phone tests (defined in tests/conftest_virtual.py)."""

from tests.conftest_virtual import (  # noqa: F401
    adb_serial,
    adb_server,
    virtual_phone,
    virtual_phone_factory,
)

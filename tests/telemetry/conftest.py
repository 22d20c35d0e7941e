"""Fixtures of the telemetry tests: the shared adb server of tests/conftest_virtual.py."""

from tests.conftest_virtual import adb_server, virtual_phone_factory  # noqa: F401

"""The line every benchmark prints about the machine it ran on."""

from __future__ import annotations

import os
import platform

from melt.devices.local import cpu_model


def machine() -> str:
    """OS, architecture, core count, CPU model and Python, on one line."""
    return (f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores (nproc), "
            f"{cpu_model() or 'unknown CPU'}, {platform.python_implementation()} {platform.python_version()}")

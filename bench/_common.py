"""What every benchmark shares: the machine line, and how it is started."""

from __future__ import annotations

import os
import platform
import sys
from typing import Callable

from melt.devices.local import cpu_model


def machine() -> str:
    """OS, architecture, core count, CPU model and Python, on one line."""
    return (f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores (nproc), "
            f"{cpu_model() or 'unknown CPU'}, {platform.python_implementation()} {platform.python_version()}")


def run(main: Callable[[], int]) -> None:
    """Run a benchmark's ``main``; Ctrl-C is a clean exit 130 (it stops what it started on the way out)."""
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)

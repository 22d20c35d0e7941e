"""Small number helpers shared by the parsers.

Every helper returns ``None`` for text that is not a finite number, so a
parser can pass ``None`` straight through as "missing" (never 0).
"""

from __future__ import annotations

import math
import re
from typing import Any

NUMBER = r"[-+]?\d+(?:[.,]\d+)?"

_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1e3, "kb": 1e3, "kib": 1024,
    "m": 1e6, "mb": 1e6, "mib": 1024**2,
    "g": 1e9, "gb": 1e9, "gib": 1024**3,
    "t": 1e12, "tb": 1e12, "tib": 1024**4,
}


def to_float(value: Any) -> float | None:
    """Convert ``value`` to a finite float, accepting a comma decimal separator.

    Returns ``None`` for anything else (empty, text, NaN, infinity, bool).
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        out = float(value)
    else:
        text = str(value).strip().replace("\u2212", "-")
        if re.fullmatch(r"[-+]?\d+,\d+", text):
            text = text.replace(",", ".")
        try:
            out = float(text)
        except ValueError:
            return None
    return out if math.isfinite(out) and abs(out) < 1e300 else None


def to_int(value: Any) -> int | None:
    """Convert ``value`` to an int (``"512"``, ``512.0``); ``None`` when it is not whole."""
    f = to_float(value)
    if f is None or f != int(f) or abs(f) > 2**63:
        return None
    return int(f)


def to_bool(value: Any) -> bool | None:
    """Read ``true/false/1/0/yes/no`` (any case); ``None`` for anything else."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "y"):
        return True
    if text in ("false", "0", "no", "n"):
        return False
    return None


def scaled(number: str, unit: str) -> float | None:
    """``("762.49", "MiB")`` -> bytes (or counts for ``M``/``B`` params); ``None`` if unknown unit."""
    value = to_float(number)
    factor = _SIZE_UNITS.get(unit.strip().lower())
    if value is None or factor is None:
        return None
    return value * factor


def params_count(number: str, unit: str) -> int | None:
    """``("999.89", "M")`` -> 999890000; ``B`` means billions here, not bytes."""
    value = to_float(number)
    factor = {"": 1, "k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12}.get(unit.strip().lower())
    if value is None or factor is None:
        return None
    return int(round(value * factor))


def clean(record: dict[str, Any]) -> dict[str, Any]:
    """Drop keys whose value is ``None`` (a missing field is omitted)."""
    return {k: v for k, v in record.items() if v is not None}

"""Jetson ``tegrastats`` beside a job: rail power and GPU load as trace columns.

The runner starts ``tegrastats --interval MS`` at its ``begin`` mark
(``MELT_AUX_CMD``) and stops it at the end; lines are parsed with
:func:`melt.parsers.tegrastats.parse_tegrastats`. tegrastats stamps lines to
the second at best, so sample ``i`` is placed at ``(i + 1) * interval`` after
the begin mark (its first line comes one interval after it starts).
"""

from __future__ import annotations

import pandas as pd

from melt.parsers.tegrastats import parse_tegrastats
from melt.telemetry.channels import column_name


def tegrastats_frame(text: str, interval_ms: int, *, start_s: float = 0.0) -> pd.DataFrame:
    """One row per tegrastats line: ``t_s``, ``rail_<name>_w``, ``gpu_util_pct``,
    ``gpu_freq_mhz``, ``emc_util_pct``, ``emc_freq_mhz``, ``ram_used_bytes`` (what the line has)."""
    rows = []
    for i, rec in enumerate(parse_tegrastats(text)):
        row: dict[str, float] = {"t_s": start_s + (i + 1) * interval_ms / 1000.0}
        for rail, mw in (rec.get("rails_mw") or {}).items():
            row[f"rail_{column_name(rail)}_w"] = mw / 1000.0
        for key in ("gpu_util_pct", "gpu_freq_mhz", "emc_util_pct", "emc_freq_mhz"):
            if rec.get(key) is not None:
                row[key] = rec[key]
        if rec.get("ram_used_mb") is not None:
            row["ram_used_bytes"] = rec["ram_used_mb"] * 1024 * 1024
        rows.append(row)
    return pd.DataFrame(rows)

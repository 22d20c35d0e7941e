"""melt: measure LLM inference on phones and edge boards.

Speed, energy, heat and memory, on the device's own clock, with provenance,
reports and regression verdicts for nightly jobs.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "load_results"]


def load_results(*args, **kwargs):
    """Tidy pandas DataFrames of stored runs; see :func:`melt.analysis.frames.load_results`."""
    from melt.analysis.frames import load_results as _load

    return _load(*args, **kwargs)

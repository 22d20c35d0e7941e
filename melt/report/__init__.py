"""HTML reports: self-contained Plotly pages that work offline."""

from __future__ import annotations

from melt.report.build import ReportInfo, build_report

__all__ = ["ReportInfo", "build_report"]

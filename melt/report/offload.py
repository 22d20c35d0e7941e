"""On the device or offloaded: TTFT and decode tok/s per target, and the network's part of an endpoint.

A run that holds cells of an OpenAI-compatible endpoint (a device of kind
``endpoint``) beside cells of phones or boards gets two charts with one bar
group per target (named "on device" or "offloaded"), a series per workload,
and a table that splits each endpoint cell's TTFT into the server's own
prefill and what the network, HTTP and the server's queue add
(:mod:`melt.runner.endpoint_metrics`). Pure: summary table and records in,
figures and rows out.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import pandas as pd

from melt.analysis.metrics import format_value
from melt.report.figures import bar_chart

#: The two figures of the comparison.
OFFLOAD_METRICS = ("ttft_ms", "decode_tps")
#: The columns of the network table (medians over an endpoint cell's jobs).
NETWORK_COLUMNS = (("ttft_ms", "TTFT"), ("server_prefill_ms", "server's prefill"),
                   ("network_ttft_ms", "network and queue"), ("ttfb_ms", "first byte"),
                   ("net_connect_ms", "connect"), ("net_tls_ms", "TLS"), ("transport_rtt_ms", "round trip"),
                   ("retries", "retries"))


def endpoint_devices(records: Iterable[Mapping[str, Any]]) -> set[str]:
    """Names of the devices whose jobs ran against an endpoint (their provenance says so)."""
    return {str(r.get("device")) for r in records
            if ((r.get("provenance") or {}).get("device") or {}).get("kind") == "endpoint"}


def offload_views(table: pd.DataFrame, jobs: pd.DataFrame,
                  records: Iterable[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(charts, network rows); both empty unless the run has endpoint and device cells."""
    remote = endpoint_devices(records)
    if table.empty or not remote:
        return [], []
    kinds = table["device"].astype(str).isin(remote)
    if kinds.all() or not kinds.any():
        return [], []
    view = table.copy()
    view["target"] = [f"{d} ({'offloaded' if r else 'on device'})" for d, r in zip(view["device_label"], kinds)]
    series = ["run_label", "framework", "model", "quantization", "workload_short"]
    charts = []
    for metric, title in (("ttft_ms", "On device vs offloaded: time to first token"),
                          ("decode_tps", "On device vs offloaded: decode tok/s")):
        fig = bar_chart(view, metric, "target", series, title)
        if fig:
            charts.append({"id": f"offload-{metric}", "title": title, "figure": fig})
    return charts, _network_rows(view[kinds], jobs)


def _network_rows(cells: pd.DataFrame, jobs: pd.DataFrame) -> list[dict[str, Any]]:
    ok = jobs[jobs["status"] == "ok"] if "status" in jobs.columns else jobs
    rows = []
    for _, cell in cells.iterrows():
        mine = ok[(ok["cell_id"] == cell["cell_id"]) & (ok["run_id"] == cell["run_id"])]
        values = []
        for metric, _ in NETWORK_COLUMNS:
            med = mine[metric].median() if metric in mine.columns and mine[metric].notna().any() else None
            values.append(format_value(metric, med) if med is not None else "–")
        rows.append({"device": cell["device_label"], "workload": cell["workload_short"], "n": int(len(mine)),
                     "values": values})
    return rows

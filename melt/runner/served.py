"""Jobs that run a server on the device and a client on the host.

- :func:`execute_plain`: the server started through the transport, the client
  run, the server always stopped and its log fetched (no telemetry);
- :func:`served_plan`: phase windows on the trace clock. ``load`` runs until
  the server answered ``/health``; then per request ``prefill`` and
  ``decode``: from the marks the patched server prints on the device clock
  (``melt-mark prefill_start|prefill_end|decode_end ... task=N``,
  ``source: marks``) when every request has them, else from the client's
  host times mapped with the measured clock offset (sent -> first token ->
  last token, ``source: host-stream``). Overlapping requests (concurrency >
  1) get one ``serve`` window instead;
- :func:`served_tables`: per-turn rows with their energy, and for sustained
  runs the throughput series beside temperature, frequency and power.

Host times carry the transport's latency (stated as ``transport_rtt_ms``)
and the clock offset's uncertainty (``provenance.clock``).
"""

from __future__ import annotations

import json
import shlex
import time
import uuid
from typing import Any, Mapping

import numpy as np
import pandas as pd

from melt.devices.base import Device
from melt.runner.execute import Execution
from melt.telemetry.energy import WindowError, integrate
from melt.telemetry.phases import Phase, PhasePlan, StepResult


class ProcessLive:
    """A server started with ``transport.start``, as its client sees it."""

    def __init__(self, transport: Any, process: Any, log_path: str):
        self.transport = transport
        self._process = process
        self._log_path = log_path

    def running(self) -> bool:
        return self._process.poll() is None

    def log(self) -> str:
        r = self.transport.shell(f"cat {shlex.quote(self._log_path)} 2>/dev/null", timeout=30, check=False)
        return r.stdout


def execute_plain(device: Device, invocation: Any) -> Execution:
    """Start the server, run the client, stop the server (always); the transcript is stdout."""
    transport = device.transport
    base = f"{device.workdir().rstrip('/')}/jobs/serve-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
    transport.shell(f"mkdir -p {shlex.quote(base.rsplit('/', 1)[0])}", timeout=30, check=False)
    t0 = time.monotonic()
    process = transport.start(list(invocation.argv), env=dict(invocation.env) or None,
                              stdout_path=f"{base}.out", stderr_path=f"{base}.err")
    live = ProcessLive(transport, process, f"{base}.err")
    try:
        transcript = invocation.client(live)
    finally:
        process.kill()
        log = live.log()
        transport.shell(f"rm -f {shlex.quote(base)}.out {shlex.quote(base)}.err {shlex.quote(base)}.out.status",
                        timeout=30, check=False)
    return Execution(json.dumps(transcript), log, 0, time.monotonic() - t0)


def _requests(transcript: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    from melt.frameworks.llamacpp.stream_metrics import all_requests

    return all_requests(transcript)


def server_windows(marks: list[Mapping[str, Any]], to_trace: float) -> list[tuple[float, float, float]]:
    """``(prefill_start, prefill_end, decode_end)`` per request (by task), on the trace clock.

    ``marks`` are parsed ``melt-mark`` records (``name``, device time, ``task``);
    ``to_trace`` maps that device time to t_s. Requests lacking a mark are left out.
    """
    by_task: dict[Any, dict[str, float]] = {}
    for m in marks:
        t = m.get("t")
        if t is None or m.get("task") is None:
            continue
        by_task.setdefault(m["task"], {}).setdefault(str(m.get("name")), float(t) + to_trace)
    out = []
    for task in sorted(by_task, key=lambda k: by_task[k].get("prefill_start", float("inf"))):
        w = by_task[task]
        if {"prefill_start", "prefill_end", "decode_end"} <= set(w):
            out.append((w["prefill_start"], w["prefill_end"], w["decode_end"]))
    return out


def served_plan(idle: tuple[float, float] | None, step: StepResult, transcript: Mapping[str, Any],
                to_trace: float, marks: list[Mapping[str, Any]] | None = None,
                mark_to_trace: float = 0.0) -> PhasePlan:
    """Phase windows of a served job (see the module doc).

    ``to_trace`` maps host time to t_s, ``mark_to_trace`` the device time of
    ``marks`` (records with ``name``, ``t``, ``task``) to t_s.
    """
    phases: list[Phase] = []
    tokens: dict[str, float] = {}
    if idle is not None and idle[1] > idle[0]:
        phases.append(Phase("idle", idle[0], idle[1]))
    ready = float(transcript["ready_s"]) + to_trace
    phases.append(Phase("load", step.start_s, max(step.start_s, ready), "host-stream"))
    reqs = [r for r in _requests(transcript) if r.get("token_times_s")]
    spans = sorted((r["sent_s"], r["done_s"]) for r in reqs)
    overlap = any(b[0] < a[1] for a, b in zip(spans, spans[1:]))
    if overlap:
        phases.append(Phase("serve", spans[0][0] + to_trace, max(s[1] for s in spans) + to_trace,
                            "host-stream"))
    else:
        windows = server_windows(list(marks or []), mark_to_trace)
        use_marks = len(windows) == len(reqs) and bool(reqs)
        for k, r in enumerate(reqs):
            times = r["token_times_s"]
            if use_marks:
                start, first, last = windows[k]
                source = "marks"
            else:
                start, first, last = r["sent_s"] + to_trace, times[0] + to_trace, times[-1] + to_trace
                source = "host-stream"
            phases.append(Phase("prefill", start, first, source))
            if last > first:
                phases.append(Phase("decode", first, last, source))
            n_prompt = (r.get("timings") or {}).get("prompt_n")
            if n_prompt:
                tokens["prefill"] = tokens.get("prefill", 0.0) + float(n_prompt)
            tokens["decode"] = tokens.get("decode", 0.0) + float(len(times) - 1)
    return PhasePlan([p for p in phases if p.end_s >= p.start_s], tokens)


def _energy(t: np.ndarray, p: np.ndarray, start: float, end: float) -> float | None:
    try:
        return integrate(t, p, start, end)
    except WindowError:
        return None


def _mean(frame: pd.DataFrame, cols: list[str], start: float, end: float) -> float | None:
    if not cols:
        return None
    inside = frame[(frame["t_s"] >= start) & (frame["t_s"] <= end)]
    values = inside[cols].to_numpy(dtype=float)
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else None


def conversation_totals(turns: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per conversation: turns, prefilled / cached / generated tokens, time and energy summed."""
    groups: dict[Any, list[dict[str, Any]]] = {}
    for row in turns:
        groups.setdefault(row.get("conversation"), []).append(row)
    out = []
    for conv, rows in groups.items():
        total: dict[str, Any] = {"conversation": conv, "turns": len(rows)}
        for key in ("prompt_tokens", "cached_tokens", "gen_tokens", "prefill_ms", "decode_ms", "e2e_ms",
                    "energy_j"):
            if all(key in r for r in rows):
                total[key] = sum(r[key] for r in rows)
        if rows and "context_tokens" in rows[-1]:
            total["context_tokens_final"] = rows[-1]["context_tokens"]
        out.append(total)
    return out


def served_tables(frame: pd.DataFrame, transcript: Mapping[str, Any], to_trace: float, *,
                  temp_col: str | None, throttled: list[Mapping[str, float]]) -> dict[str, Any]:
    """``turns`` (conversations), ``series`` and sustained metrics (see the module doc)."""
    from melt.frameworks.llamacpp.stream_metrics import token_rate_series, turn_rows

    out: dict[str, Any] = {"metrics": {}, "missing": {}}
    has_power = "power_w" in frame.columns and frame["power_w"].notna().sum() >= 2
    sub = frame[["t_s", "power_w"]].dropna() if has_power else None
    t = sub["t_s"].to_numpy(dtype=float) if sub is not None else np.array([])
    pw = sub["power_w"].to_numpy(dtype=float) if sub is not None else np.array([])

    if "conversations" in transcript:
        rows = []
        for row in turn_rows(transcript):
            start, end = row.pop("sent_s") + to_trace, row.pop("done_s") + to_trace
            first = row.pop("first_token_s", None)
            row["start_s"], row["end_s"] = round(start, 6), round(end, 6)
            if has_power:
                e = _energy(t, pw, start, end)
                if e is not None:
                    row["energy_j"] = e
                if first is not None:
                    for name, a, b in (("prefill", start, first + to_trace), ("decode", first + to_trace, end)):
                        e = _energy(t, pw, a, b)
                        if e is not None:
                            row[f"energy_{name}_j"] = e
            rows.append(row)
        out["turns"] = rows
        if has_power and rows and all("energy_j" in r for r in rows):
            out["metrics"]["energy_conversation_j"] = float(sum(r["energy_j"] for r in rows))
        out["conversation_totals"] = conversation_totals(rows)

    if transcript.get("kind") == "sustained":
        freq_cols = [c for c in frame.columns if c.startswith("cpufreq_") and c.endswith("_khz")]
        series = []
        for w in token_rate_series(transcript, float(transcript.get("window_s") or 5.0)):
            a, b = w["start_s"] + to_trace, w["end_s"] + to_trace
            row: dict[str, Any] = {"start_s": round(a, 6), "end_s": round(b, 6), "tokens": w["tokens"],
                                   "tps": w["tps"]}
            if temp_col:
                row["temp_c"] = _mean(frame, [temp_col], a, b)
            row["cpufreq_khz"] = _mean(frame, freq_cols, a, b)
            if has_power:
                e = _energy(t, pw, a, b)
                if e is not None:
                    row["power_w"] = e / (b - a)
                    if w["tokens"]:
                        row["energy_per_token_j"] = e / w["tokens"]
            row["throttled"] = any(iv["start_s"] < b and iv["end_s"] > a for iv in throttled)
            series.append({k: v for k, v in row.items() if v is not None})
        out["series"] = series
        if series:
            begin = series[0]["start_s"]
            if throttled:
                first = min(iv["start_s"] for iv in throttled if iv["end_s"] >= begin) if any(
                    iv["end_s"] >= begin for iv in throttled) else None
                if first is not None:
                    out["metrics"]["time_to_first_throttle_s"] = max(0.0, first - begin)
            else:
                out["missing"]["time_to_first_throttle_s"] = "the device did not throttle during the run"
            per_tok = [r["energy_per_token_j"] for r in series if "energy_per_token_j" in r]
            if len(per_tok) >= 2:
                out["metrics"]["energy_per_token_start_j"] = per_tok[0]
                out["metrics"]["energy_per_token_end_j"] = per_tok[-1]
    return out

"""Terminal views of stored runs (``melt results show``), readable at 80 columns.

A CI log is not a terminal: Rich then uses $COLUMNS or 80 columns, and a wide
table would squeeze its columns to nothing or cut values to "…". So a run is
printed as one block per cell (its device, framework, model, workload and
swept parameters on one line, then its metrics as rows and its repetitions as
columns, as many columns per line as the width holds), and failed jobs as
lines of their own with their reasons, wrapped, never cut. Every user string
is printed as text (the console has markup off; styles come from
:class:`rich.text.Text`).
"""

from __future__ import annotations

import json
import math
from typing import Any

from rich.console import Console
from rich.text import Text

from melt.analysis.metrics import format_value, label
from melt.cli.common import hanging
from melt.labels import job_labels

#: Metrics shown per job, in this order, when a job of the cell has them.
SHOWN_METRICS = ("prefill_tps", "decode_tps", "ttft_ms", "itl_ms_p50", "load_ms",
                 "perplexity", "kld_mean", "same_top_p",
                 "energy_per_token_decode_j", "energy_per_token_run_j", "peak_rss_bytes", "temp_max_c")

INDENT = "  "
GAP = "  "
#: Longest reason printed in full; a longer one says where the rest is.
REASON_CHARS = 600


def swept_params(jobs: list[dict]) -> dict[str, list[str]]:
    """Per workload, the parameters that vary across its jobs (the sweep's axes)."""
    values: dict[str, dict[str, set]] = {}
    for job in jobs:
        for k, v in (job.get("params") or {}).items():
            values.setdefault(job.get("workload"), {}).setdefault(k, set()).add(json.dumps(v, sort_keys=True))
    return {w: sorted(k for k, vs in params.items() if len(vs) > 1) for w, params in values.items()}


def _cells(jobs: list[dict]) -> list[list[dict]]:
    """Jobs grouped by cell, in the order the cells first appear; repetitions sorted."""
    groups: dict[str, list[dict]] = {}
    for job in jobs:
        key = job.get("cell_id") or json.dumps(
            [job.get(k) for k in ("device", "framework", "model", "workload", "params")], sort_keys=True,
            default=str)
        groups.setdefault(str(key), []).append(job)
    return [sorted(g, key=lambda j: (j.get("repetition") is None, j.get("repetition") or 0)) for g in groups.values()]


def _value(metric: str, v: Any) -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return "–" if v is None else str(v)
    return format_value(metric, float(v)) if math.isfinite(v) else "–"


def _median(values: list[float]) -> float:
    s = sorted(values)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


def cell_label(job: dict, swept: dict[str, list[str]]) -> str:
    """``device (simulated, stand-in) · framework · model (quantization) · workload  n_gen=16``.

    The device carries the job's labels (:func:`melt.labels.job_labels`).
    Only the swept parameters are shown; the quantization only when the
    model's name does not already say it.
    """
    from melt.analysis.frames import quantization_of  # here: listing runs needs no pandas

    tags = job_labels(job)
    device = str(job.get("device")) + (f" ({', '.join(tags)})" if tags else "")
    model = str(job.get("model"))
    quant = quantization_of(job)
    if quant and quant.lower() not in model.lower():
        model += f" ({quant})"
    text = " · ".join([device, str(job.get("framework")), model, str(job.get("workload"))])
    params = " ".join(f"{k}={(job.get('params') or {}).get(k)}" for k in swept.get(job.get("workload"), ()))
    return f"{text}  {params}" if params else text


def _grid(console: Console, metrics: list[str], jobs: list[dict]) -> None:
    """Metrics as rows, a median column (two or more jobs) then one column per repetition,
    split over several lines of columns when the console is narrow."""
    labels = [label(m) for m in metrics]
    columns: list[tuple[str, list[str]]] = []
    if len(jobs) > 1:
        med = []
        for m in metrics:
            vals = [float(v) for j in jobs if isinstance(v := (j.get("metrics") or {}).get(m), (int, float))
                    and not isinstance(v, bool) and math.isfinite(v)]
            med.append(_value(m, _median(vals)) if len(vals) > 1 else "–")
        columns.append(("median", med))
    for j in jobs:
        columns.append((f"rep {j.get('repetition')}", [_value(m, (j.get("metrics") or {}).get(m)) for m in metrics]))
    label_w = max(len("metric"), *(len(s) for s in labels))
    value_w = max(len(h) for h, _ in columns)
    value_w = max(value_w, *(len(v) for _, vals in columns for v in vals))
    per_line = max(1, (console.width - len(INDENT) - label_w) // (len(GAP) + value_w))
    for start in range(0, len(columns), per_line):
        chunk = columns[start:start + per_line]
        head = INDENT + "metric".ljust(label_w) + "".join(GAP + h.rjust(value_w) for h, _ in chunk)
        console.print(Text(head, style="dim"))
        for i, name in enumerate(labels):
            console.print(Text(INDENT + name.ljust(label_w) + "".join(GAP + vals[i].rjust(value_w)
                                                                     for _, vals in chunk)))


def print_jobs(console: Console, jobs: list[dict]) -> None:
    """Every job of a run, one block per cell (see the module docstring)."""
    swept = swept_params(jobs)
    for group in _cells(jobs):
        ok = sum(1 for j in group if j.get("status") == "ok")
        console.print()
        console.print(Text.assemble((cell_label(group[0], swept), "bold"),
                                    (f"  [{ok}/{len(group)} ok]", "dim" if ok == len(group) else "yellow")))
        measured = [j for j in group if any(k in (j.get("metrics") or {}) for k in SHOWN_METRICS)]
        metrics = [k for k in SHOWN_METRICS if any(k in (j.get("metrics") or {}) for j in measured)]
        if metrics:
            _grid(console, metrics, measured)
        _failures(console, group)


def _failures(console: Console, group: list[dict]) -> None:
    """The jobs that did not finish ok, those with the same status and reason on one entry."""
    same: dict[tuple[str, str], list[str]] = {}
    for j in group:
        if j.get("status") != "ok":
            key = (str(j.get("status")), str(j.get("reason") or "(no reason recorded)"))
            same.setdefault(key, []).append(str(j.get("repetition")))
    for (status, reason), reps in same.items():
        if len(reason) > REASON_CHARS:
            reason = (reason[:REASON_CHARS] + f" [{len(reason) - REASON_CHARS} more characters "
                      "in `melt results show --json`]")
        console.print(Text.assemble(INDENT, ("rep " if len(reps) == 1 else "reps ") + ", ".join(reps) + " ",
                                    (status, "bold red"), ":"))
        console.print(Text(hanging(reason, console.width, 2 * INDENT)))


#: Narrower than this, `results list` leaves out the creation time (the run id starts with it).
WIDE = 100
#: The longest run status (complete-with-failures): labels under a status wrap to it.
STATUS_WIDTH = 22


def _lines(words: list[str], width: int) -> list[str]:
    """``words`` joined with ", ", broken into lines of at most ``width`` between words."""
    lines: list[str] = []
    for word in words:
        if lines and len(lines[-1]) + len(word) + 2 <= width:
            lines[-1] += f" {word}"
        else:
            lines.append(word)
        lines[-1] += ","
    return [line.rstrip(",") if i == len(lines) - 1 else line for i, line in enumerate(lines)]


def print_runs(console: Console, rows: list[dict[str, Any]]) -> None:
    """The ``melt results list`` table: ids, statuses and counts never cut.

    A run's labels (every label among its jobs) are under its status. The
    experiment name gets the width left and wraps; below :data:`WIDE`
    columns the creation time is left out (a run id is its UTC creation time,
    ``YYYYmmdd-HHMMSS-xxxx``; ``--json`` has both).
    """
    from rich import box
    from rich.table import Table

    wide = console.width >= WIDE
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    table.add_column("run id", no_wrap=True)
    table.add_column("experiment", overflow="fold", ratio=1)
    if wide:
        table.add_column("created (UTC)", no_wrap=True)
    table.add_column("status / labels", no_wrap=True)
    table.add_column("ok/total", no_wrap=True, justify="right")
    for r in rows:
        created = [(r["created_at"] or "")[:19].replace("T", " ")] if wide else []
        status = Text(r["status"] or "")
        if r.get("labels"):  # under the status: at 80 columns a column of its own leaves no room
            status.append("\n" + "\n".join(_lines(r["labels"], STATUS_WIDTH)), style="yellow")
        table.add_row(r["run_id"], r["experiment"] or "", *created, status,
                      f"{r['jobs_ok']}/{r['jobs_total'] or '?'}")
    console.print(table)


def provenance_line(jobs: list[dict], melt_version: str | None = None) -> str | None:
    """What produced a run, from its first job that ran ok (else its first job): one line.

    ``provenance of the first job: melt 0.1.0, llama.cpp 0c1e57098bba (host),
    model sha256 5f2b…, command: ...``. Only what the record holds is said: a
    job that failed before its build was staged has no build, no command,
    and says so, never ``None`` or ``?``. ``melt_version`` (the run's) stands
    in for a record without one. ``None`` when there are no jobs.
    """
    if not jobs:
        return None
    job = next((j for j in jobs if j.get("status") == "ok"), jobs[0])
    prov = job.get("provenance") or {}
    parts = []
    version = prov.get("melt_version") or melt_version
    if version:
        parts.append(f"melt {version}")
    parts.append(build_text(prov.get("framework_build"), job.get("framework")))
    sha = (prov.get("model") or {}).get("sha256")
    if sha:
        parts.append(f"model sha256 {str(sha)[:12]}…")
    if prov.get("command"):
        parts.append(f"command: {prov['command']}")
    which = "the first job" if job is jobs[0] else "the first job that ran"
    failed = "" if job.get("status") == "ok" else f" ({job.get('status') or 'not ok'})"
    return f"provenance of {which}{failed}: " + ", ".join(p for p in parts if p)


def build_text(build: dict | None, framework: str | None = None) -> str:
    """A framework build in a few words: ``llama.cpp 0c1e57098bba (arm64)``.

    MLC's stand-in says what does its work (``mlc-llm stand-in, on llama.cpp
    0c1e57098bba (arm64)``); a prebuilt folder says ``(prebuilt)``; unknown
    parts are left out, and a job with no build says ``no build recorded``.
    """
    name = str((build or {}).get("framework") or framework or "framework")
    if not build:
        return f"{name}: no build recorded"
    if build.get("stand_in"):
        inner = build.get("llama.cpp")
        return f"{name} stand-in" + (f", on {build_text(inner, 'llama.cpp')}" if isinstance(inner, dict) else "")
    text = name
    commit = build.get("llama_cpp_commit") or build.get("commit")
    if commit:
        text += f" {str(commit)[:12]}"
    if build.get("profile"):
        text += f" ({build['profile']})"
    return text

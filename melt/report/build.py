"""Build the HTML report: one self-contained file (Plotly inlined) for one run or many.

Sections: notices of labelled jobs (simulated, emulated, stand-in), the best
configuration per criterion with the Pareto sets (:mod:`melt.report.best`), summary
table (median and 95 % bootstrap CI per cell), comparison charts, on the device against
offloaded to an endpoint (:mod:`melt.report.offload`), speed against
quality per device (:mod:`melt.report.tradeoff`), sustained runs (tok/s and temperature over
time, throttling shaded), conversations turn by turn, failed jobs with reasons, every job with its
provenance and its downsampled trace (rendered when opened), and the shared
provenance blocks. Every user string is escaped by the template (autoescape)
or by :func:`melt.report.figures.text` for chart labels; data blocks are
embedded as HTML-safe JSON.
"""

from __future__ import annotations

import base64
import gzip
import json
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Iterable, Sequence

import pandas as pd
from jinja2 import Environment, FileSystemLoader, select_autoescape
from jinja2.utils import htmlsafe_json_dumps
from markupsafe import Markup

from melt import __version__
from melt.analysis.frames import TRACE_FILE, jobs_frame, quantization_of, read_trace
from melt.analysis.history import params_text
from melt.analysis.metrics import QUALITY_METRICS, SUMMARY_METRICS, format_value, label
from melt.analysis.stats import cell_stats, summary_table
from melt.labels import EMULATED, SIMULATED, STAND_IN, SYNTHETIC, count_labels, job_labels, parse_labels
from melt.report.best import best_per_criterion
from melt.report.figures import bar_chart, text, trace_data
from melt.report.offload import NETWORK_COLUMNS, offload_views
from melt.report.tradeoff import tradeoff_views
from melt.report.workloads import sustained_charts, turn_tables
from melt.store.runs import Run

TEMPLATES = Path(__file__).parent / "templates"

#: Default budget of trace values (time plus channels, 4 bytes each) for the whole report.
TRACE_VALUES = 300_000
MIN_POINTS, MAX_POINTS = 32, 4000

_SHARED_PROVENANCE = ("framework_build", "device", "model", "host")

#: A table body or the charts' data larger than this (characters) is embedded gzip-compressed
#: (base64) and unpacked by the page as it opens: the job rows of 10,000 jobs shrink ~15 times.
PACK_CHARS = 1_000_000
#: With ``traces="auto"``, traces whose data would pass this many characters in the page are
#: written beside it instead (``<report stem>-data/traces-N.js``), loaded when one is opened.
TRACE_INLINE_CHARS = 4_000_000
TRACES_PER_FILE = 250


@dataclass
class ReportInfo:
    """What was written: paths, sizes (bytes) and counts."""

    path: Path
    size_bytes: int
    jobs: int
    failed: int
    cells: int
    charts: int
    traces: int
    trace_samples: int  # readings of the drawn channels (a slow channel has one every few ticks)
    trace_points: int  # points drawn, all channels together
    seconds: float
    plotly_js: Path | None = None
    simulated_jobs: int = 0
    labelled_jobs: dict[str, int] = field(default_factory=dict)  # label -> jobs that carry it
    timings: dict[str, float] = field(default_factory=dict)
    perfetto_dir: Path | None = None  # where the jobs' Perfetto traces were written, when asked
    perfetto_traces: int = 0
    traces_dir: Path | None = None  # where the trace files were written, when not in the page
    traces_bytes: int = 0  # of the trace files beside the page


def _json(obj: Any) -> Markup:
    """HTML-safe JSON for a ``<script type="application/json">`` block (NaN is refused)."""
    return htmlsafe_json_dumps(obj, dumps=partial(json.dumps, allow_nan=False, separators=(",", ":")))


def _pack(text: str, ident: str, packs: list[dict[str, str]], limit: int) -> dict[str, Any]:
    """``text`` as it goes into the page: whole, or (longer than ``limit``) gzip-compressed in
    ``packs`` under ``ident``, for the page to unpack (base64 holds no markup)."""
    if len(text) <= limit:
        return {"html": Markup(text), "packed": None}
    packs.append({"id": ident, "data": base64.b64encode(gzip.compress(text.encode("utf-8"), 6, mtime=0))
                  .decode("ascii")})
    return {"html": Markup(""), "packed": ident}


def _write_trace_files(traces: dict[str, Markup], rows: list[dict[str, Any]], folder: Path) -> int:
    """Write the traces as scripts of :data:`TRACES_PER_FILE` each in ``folder``, point each
    job's row at its file, and return the bytes written. Older trace files there are removed."""
    from urllib.parse import quote

    folder.mkdir(exist_ok=True)
    for old in folder.glob("traces-*.js"):
        old.unlink()
    keys = list(traces)
    where: dict[str, str] = {}
    size = 0
    for n, start in enumerate(range(0, len(keys), TRACES_PER_FILE)):
        name = f"traces-{n}.js"
        part = keys[start:start + TRACES_PER_FILE]
        body = "".join(f'm["{k}"]={traces[k]};\n' for k in part)  # keys are t<number>
        path = folder / name
        path.write_text("(function(){var m=window.meltTraces=window.meltTraces||{};\n" + body + "})();\n",
                        encoding="utf-8")
        size += path.stat().st_size
        where.update((k, f"{quote(folder.name)}/{name}") for k in part)
    for row in rows:
        if row.get("trace") in where:
            row["trace_src"] = where[row["trace"]]
    return size


def _device_label(device: Any, labels: Any) -> str:
    """``pixel-8 (simulated, stand-in)``: the device with the labels of its cell."""
    tags = parse_labels(labels)
    return f"{device} ({', '.join(tags)})" if tags else str(device)


def _summary(jobs: pd.DataFrame, multi_run: bool, n_boot: int) -> tuple[pd.DataFrame, int]:
    parts = []
    for run_id, g in jobs.groupby("run_id", sort=False):
        stats = cell_stats(g, SUMMARY_METRICS, n_boot=n_boot)
        if stats.empty:
            continue
        table = summary_table(stats, SUMMARY_METRICS)
        _add_measurement_intervals(table, g)
        table.insert(0, "run_id", run_id)
        parts.append(table)
    if not parts:
        return pd.DataFrame(), 0
    table = pd.concat(parts, ignore_index=True)
    table["device_label"] = [_device_label(d, t) for d, t in zip(table["device"], table["labels"])]
    table["workload_short"] = _workload_short(table)
    table["quantization"] = table["quantization"].fillna("")
    table["run_label"] = table["run_id"] if multi_run else ""
    return table, len(table)


def _params(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {"params": value}
    return dict(value) if isinstance(value, dict) else {}


def _workload_short(table: pd.DataFrame) -> list[str]:
    """A workload named with only the parameters that differ between its cells: ``bench (n_gen=32)``."""
    params = [_params(p) for p in table["params"]]
    values: dict[Any, dict[str, set[str]]] = {}  # workload -> parameter -> the values its cells hold
    for w, p in zip(table["workload"], params):
        for k, v in p.items():
            values.setdefault(w, {}).setdefault(k, set()).add(json.dumps(v, sort_keys=True, default=str))
    counts = pd.Series(list(table["workload"])).value_counts().to_dict()
    held = {w: {k: sum(1 for w2, p in zip(table["workload"], params) if w2 == w and k in p) for k in ks}
            for w, ks in values.items()}
    out = []
    for w, p in zip(table["workload"], params):
        # a parameter tells cells apart when it takes two values, or some cells lack it
        differ = {k: v for k, v in p.items() if len(values[w][k]) > 1 or held[w][k] < counts[w]}
        out.append(f"{w} ({params_text(differ)})" if differ else str(w))
    return out


def _add_measurement_intervals(table: pd.DataFrame, jobs: pd.DataFrame) -> None:
    """``<metric>_u95``: the median over a cell's ok jobs of each job's own 95% half-width.

    An energy's interval (the sensor's limits, docs/measurement.md) does not
    shrink with repetitions the way the spread does: the error bars show
    whichever reaches further.
    """
    ok = jobs[jobs["status"] == "ok"] if "status" in jobs.columns else jobs
    for m in SUMMARY_METRICS:
        col = f"{m}_u95"
        if col in ok.columns and ok[col].notna().any():
            per_cell = ok.groupby("cell_id")[col].median()
            table[col] = table["cell_id"].map(per_cell)


def _charts(table: pd.DataFrame) -> list[dict[str, Any]]:
    if table.empty:
        return []
    charts = []
    base_series = ["run_label", "framework", "model", "quantization", "workload_short"]
    for metric in SUMMARY_METRICS:
        fig = bar_chart(table, metric, "device_label", base_series, f"{label(metric)} by device")
        if fig:
            charts.append({"id": f"by-device-{metric}", "title": f"{label(metric)} by device", "figure": fig})
    for key, name in (("framework", "framework"), ("quantization", "quantization")):
        if table[key].nunique() > 1:
            series = ["run_label", "device_label"] + [k for k in ("framework", "model", "quantization")
                                                       if k != key] + ["workload_short"]
            for metric in ("decode_tps", "energy_per_token_decode_j"):
                fig = bar_chart(table, metric, key, series, f"{label(metric)} by {name}")
                if fig:
                    charts.append({"id": f"by-{name}-{metric}", "title": f"{label(metric)} by {name}",
                                   "figure": fig})
    return charts


def _summary_rows(table: pd.DataFrame) -> list[dict[str, Any]]:
    rows = []
    for _, r in table.iterrows():
        values = []
        for m in SUMMARY_METRICS:
            v = r.get(m)
            ok = v is not None and v == v
            values.append({
                "metric": m, "value": float(v) if ok else None, "text": format_value(m, v) if ok else "–",
                "ci": (f"{format_value(m, r.get(f'{m}_ci_low'))} – {format_value(m, r.get(f'{m}_ci_high'))}"
                       + (f"; {'evaluation' if m in QUALITY_METRICS else 'sensor'} ± {format_value(m, u)}"
                          if (u := r.get(f"{m}_u95")) is not None and u == u else "") if ok else ""),
                "flags": flags if ok and isinstance(flags := r.get(f"{m}_flags"), str) else "",
            })
        rows.append({"run_id": r["run_id"], "cell_id": r["cell_id"], "device": r["device"],
                     "simulated": bool(r["simulated"]), "emulated": bool(r.get("emulated", False)),
                     "labels": parse_labels(r.get("labels")),
                     "framework": r["framework"], "model": r["model"],
                     "quantization": r["quantization"], "workload": r["workload"],
                     "params": params_text(r["params"]), "n": int(r["n"]), "values": values,
                     "anchor": f"cell-{r['run_id']}-{r['cell_id']}"})
    return rows


class _ProvenanceBook:
    """Shared provenance blocks (build, device, model, host), each stored once."""

    def __init__(self) -> None:
        self.blocks: dict[str, dict[str, Any]] = {}
        self._ids: dict[tuple[str, str], str] = {}

    def ref(self, kind: str, value: Any) -> str:
        blob = json.dumps(value, sort_keys=True, indent=2, default=str)
        key = (kind, blob)
        if key not in self._ids:
            ident = f"prov-{kind}-{sum(1 for k in self._ids if k[0] == kind) + 1}"
            self._ids[key] = ident
            self.blocks[ident] = {"id": ident, "kind": kind, "text": blob}
        return self._ids[key]


def _job_rows(runs: Sequence[Run], records: dict[str, list[dict]], book: _ProvenanceBook
              ) -> list[dict[str, Any]]:
    rows = []
    for run in runs:
        jobs = sorted(records[run.run_id], key=lambda j: (str(j.get("device")), str(j.get("model")),
                                                            str(j.get("cell_id")), j.get("repetition") or 0))
        seen_cells = set()
        for job in jobs:
            prov = dict(job.get("provenance") or {})
            refs = [(k, book.ref(k, prov.pop(k))) for k in _SHARED_PROVENANCE if k in prov]
            anchor = f"cell-{run.run_id}-{job.get('cell_id')}"
            m = job.get("metrics") or {}
            rows.append({
                "run_id": run.run_id, "job_id": job.get("job_id"), "cell_id": job.get("cell_id"),
                "anchor": anchor if anchor not in seen_cells else None,
                "device": job.get("device"), "labels": (labels := job_labels(job)),
                "simulated": SIMULATED in labels, "emulated": EMULATED in labels,
                "framework": job.get("framework"), "model": job.get("model"),
                "quantization": quantization_of(job) or "", "workload": job.get("workload"),
                "params": params_text(job.get("params")), "repetition": job.get("repetition"),
                "status": job.get("status"), "reason": job.get("reason"),
                "metrics": [format_value(k, m.get(k)) if isinstance(m.get(k), (int, float)) else "–"
                            for k in SUMMARY_METRICS],
                "provenance": json.dumps(prov, sort_keys=True, indent=2, default=str),
                "refs": refs, "trace": None,
                "has_trace": (run.job_dir(str(job.get("job_id"))) / TRACE_FILE).is_file(),
                "record": job,
            })
            seen_cells.add(anchor)
    return rows


def _perfetto_link(row: dict[str, Any], run: Run, folder: Path | None) -> None:
    """The job's Perfetto trace: written to ``folder`` and linked, or the command that exports it."""
    from urllib.parse import quote

    from melt.analysis.perfetto import job_file_name, write_job_file

    row["perfetto_command"] = f"melt results export {run.run_id} --format perfetto --job {row['job_id']}"
    if folder is not None:
        name = job_file_name(run.run_id, str(row["job_id"]))
        write_job_file(run, row["record"], folder / name)
        row["perfetto"] = f"{quote(folder.name)}/{quote(name)}"


def build_report(runs: Iterable[Run], output: Path | str, *, title: str | None = None,
                 plotly_js: str = "inline", trace_values: int = TRACE_VALUES,
                 n_boot: int = 1000, perfetto: bool = False, traces: str = "auto") -> ReportInfo:
    """Write the HTML report of ``runs`` to ``output`` and return what was written.

    ``plotly_js`` is ``"inline"`` (one file that works offline) or
    ``"beside"`` (``plotly.min.js`` written once next to the report, still
    offline). ``trace_values`` bounds the trace data embedded in the whole
    report (float32 values); each trace gets an equal share, between
    :data:`MIN_POINTS` and :data:`MAX_POINTS` points per channel.
    ``perfetto``: write each drawn job's full telemetry as a Chrome/Perfetto
    trace in ``<report stem>-traces/`` beside the report and link it from the
    job's trace (:mod:`melt.analysis.perfetto`); without it, the trace shows
    the command that exports it. ``traces``: ``"inline"`` keeps every trace
    in the page (drawn from it when opened), ``"beside"`` writes them to
    ``<report stem>-data/traces-N.js`` next to it (loaded when one is
    opened, still offline), ``"auto"`` keeps them in the page up to
    :data:`TRACE_INLINE_CHARS`. Tables and chart data over
    :data:`PACK_CHARS` are embedded compressed. Raises ``ValueError`` for an
    unknown ``plotly_js`` or ``traces`` mode, ``OSError`` when a file cannot
    be written.
    """
    if plotly_js not in ("inline", "beside"):
        raise ValueError("plotly_js must be 'inline' or 'beside'")
    if traces not in ("inline", "beside", "auto"):
        raise ValueError("traces must be 'inline', 'beside' or 'auto'")
    trace_mode = traces
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    runs = list(runs)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    records = {run.run_id: run.jobs() for run in runs}
    jobs = jobs_frame(runs)
    multi_run = len(runs) > 1
    timings["load_s"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    table, n_cells = _summary(jobs, multi_run, n_boot) if not jobs.empty else (pd.DataFrame(), 0)
    charts = _charts(table)
    offload, network_rows = offload_views(table, jobs, (j for js in records.values() for j in js)) \
        if n_cells else ([], [])
    tradeoffs, front_sentences = tradeoff_views(table) if n_cells else ([], [])
    summary_rows = _summary_rows(table) if n_cells else []
    best = best_per_criterion(table, tradeoffs) if n_cells else []
    timings["analysis_s"] = time.perf_counter() - t1

    t2 = time.perf_counter()
    book = _ProvenanceBook()
    job_rows = _job_rows(runs, records, book)
    run_by_id = {r.run_id: r for r in runs}
    with_trace = [r for r in job_rows if r["has_trace"] and r["status"] == "ok"]
    share = trace_values // max(1, len(with_trace))
    perfetto_dir = output.parent / f"{output.stem}-traces" if perfetto else None
    if perfetto_dir is not None:
        perfetto_dir.mkdir(exist_ok=True)
    traces: dict[str, Any] = {}  # the parameter named the mode, kept in trace_mode
    total_samples = total_points = 0
    for i, row in enumerate(with_trace):
        frame = read_trace(run_by_id[row["run_id"]], row["job_id"])
        if frame is None:
            continue
        # each channel is drawn from its own readings: a value per point, and the times
        # once per set of channels read at the same ticks
        data = trace_data(frame, row["record"], lambda channels, axes: int(
            min(MAX_POINTS, max(MIN_POINTS, share // max(1, channels + axes)))))
        if data is None:
            continue
        key = f"t{i}"
        data["title"] = text(f"{row['device']} · {row['model']} · {row['workload']} · rep {row['repetition']}")
        traces[key] = data
        row["trace"] = key
        _perfetto_link(row, run_by_id[row["run_id"]], perfetto_dir)
        total_samples += data["samples"]
        total_points += data["points"]
    timings["traces_s"] = time.perf_counter() - t2

    t3 = time.perf_counter()
    js_path = None
    if plotly_js == "inline":
        from plotly.offline import get_plotlyjs

        plotly_inline, plotly_src = Markup(get_plotlyjs()), None
    else:
        from plotly.offline import get_plotlyjs

        js_path = output.parent / "plotly.min.js"
        code = get_plotlyjs()
        if not js_path.is_file() or js_path.stat().st_size != len(code.encode()):
            js_path.write_text(code, encoding="utf-8")
        plotly_inline, plotly_src = None, js_path.name
    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=select_autoescape(["j2", "html"]),
                      trim_blocks=True, lstrip_blocks=True)
    failed = [r for r in job_rows if r["status"] != "ok"]
    labelled = count_labels(r["record"] for r in job_rows)
    simulated = labelled.get(SIMULATED, 0)
    stand_in_measured = sum(1 for r in job_rows if STAND_IN in r["labels"] and SIMULATED not in r["labels"])
    sustained = sustained_charts(job_rows)
    turns = turn_tables(job_rows)
    encoded = {k: _json(v) for k, v in traces.items()}
    traces_dir, traces_bytes = None, 0
    if trace_mode == "beside" or (trace_mode == "auto" and sum(map(len, encoded.values())) > TRACE_INLINE_CHARS):
        traces_dir = output.parent / f"{output.stem}-data"
        traces_bytes = _write_trace_files(encoded, job_rows, traces_dir)
        encoded = {}
    rows = env.get_template("rows.html.j2").module
    packs: list[dict[str, str]] = []
    summary_body = _pack(str(rows.summary_rows(summary_rows, multi_run)), "summary", packs, PACK_CHARS)
    jobs_body = _pack(str(rows.job_rows(job_rows, [label(m) for m in SUMMARY_METRICS])), "jobs", packs,
                      PACK_CHARS)
    charts_json = _json({c["id"]: c["figure"] for c in (*charts, *sustained, *tradeoffs, *offload)})
    figures = _pack(str(charts_json), "figures", packs, PACK_CHARS)
    html_text = env.get_template("report.html.j2").render(
        title=title or ("melt report: " + ", ".join(r.run_id for r in runs[:3])
                        + (" …" if len(runs) > 3 else "")),
        melt_version=__version__,
        generated_at=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        runs=[{"run_id": r.run_id, "experiment": (r.manifest.get("experiment") or {}).get("name"),
               "status": r.manifest.get("status"), "created_at": r.manifest.get("created_at"),
               "jobs": len(records[r.run_id])} for r in runs],
        metric_labels=[label(m) for m in SUMMARY_METRICS],
        summary=summary_rows, multi_run=multi_run, charts=charts, best=best,
        charts_json=figures["html"] if not figures["packed"] else "", figures_packed=figures["packed"],
        summary_body=summary_body, jobs_body=jobs_body, packed=packs,
        offload=offload, network_rows=network_rows, network_labels=[name for _, name in NETWORK_COLUMNS],
        tradeoffs=tradeoffs, front_sentences=front_sentences,
        sustained=sustained, turns=turns,
        failed=failed, jobs=job_rows, traces=encoded,
        provenance=list(book.blocks.values()), labelled=labelled,
        virtual=simulated - labelled.get(SYNTHETIC, 0), stand_in_measured=stand_in_measured,
        total_jobs=len(job_rows),
        plotly_inline=plotly_inline, plotly_src=plotly_src, trace_points=total_points,
        trace_samples=total_samples,
    )
    output.write_text(html_text, encoding="utf-8")
    timings["render_s"] = time.perf_counter() - t3
    return ReportInfo(path=output, size_bytes=output.stat().st_size, jobs=len(job_rows),
                      failed=len(failed), cells=n_cells,
                      charts=len(charts) + len(sustained) + len(tradeoffs) + len(offload),
                      traces=len(traces),
                      trace_samples=total_samples, trace_points=total_points,
                      seconds=time.perf_counter() - t0, plotly_js=js_path,
                      simulated_jobs=simulated, labelled_jobs=labelled, timings=timings,
                      perfetto_dir=perfetto_dir,
                      perfetto_traces=sum(1 for r in job_rows if r.get("perfetto")),
                      traces_dir=traces_dir, traces_bytes=traces_bytes)

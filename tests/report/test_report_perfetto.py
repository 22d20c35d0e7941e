"""The report links each job's Perfetto trace, written beside it (`melt report --perfetto-traces`), or
shows the command that exports it; the traces come from real runs (tests/data/report/README.md)."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from urllib.parse import unquote

import pytest

from melt.store.runs import ResultsStore
from tests.analysis import trace_events
from tests.helpers import melt

DATA = Path(__file__).parents[1] / "data" / "report"
LINK = re.compile(r'<a href="([^"]+)" download>Perfetto trace \(JSON\)</a>')
COMMAND = re.compile(r"<code>(melt results export \S+ --format perfetto --job [^<]+)</code>")


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    root = tmp_path_factory.mktemp("report-perfetto") / "results"
    run = ResultsStore(root).create_run({"name": "real traces"}, experiment_path=None, host={})
    jobs = json.loads((DATA / "real-traces.json").read_text())
    for i, job in enumerate(jobs):
        record = {k: v for k, v in job.items() if k != "trace"}
        record.update(job_id=f"job{i}", cell_id=f"cell{i}", status="ok", reason=None, provenance={})
        run.save_job(record, {"trace.parquet": (DATA / job["trace"]).read_bytes()})
    run.update(status="complete", total_jobs=len(jobs))
    return root, run.run_id, len(jobs)


def test_report_links_each_jobs_perfetto_trace_beside_it(stored, tmp_path):
    root, run_id, n = stored
    out = tmp_path / "nightly.html"
    done = melt("report", run_id, "--results", str(root), "-o", str(out), "--perfetto-traces")
    assert done.returncode == 0, done.stderr
    assert f"{n} Perfetto traces in {tmp_path / 'nightly-traces'}" in done.stderr
    page = out.read_text(encoding="utf-8")
    links = [html.unescape(h) for h in LINK.findall(page)]
    assert sorted(links) == [f"nightly-traces/{run_id}-job{i}.json" for i in range(n)]
    for link in links:
        path = out.parent / unquote(link)  # relative to the report, as a browser resolves it
        trace = trace_events.load(path.read_text(encoding="utf-8"))
        trace_events.validate(trace)
        assert trace_events.problems(trace) == []
        job = link.rsplit("-", 1)[1].removesuffix(".json")
        export = melt("results", "export", run_id, "--results", str(root), "--format", "perfetto",
                      "--job", job)
        assert export.returncode == 0, export.stderr
        assert trace == trace_events.load(export.stdout)  # the very file the export writes


def test_without_the_flag_the_report_shows_the_export_command(stored, tmp_path):
    root, run_id, n = stored
    out = tmp_path / "report.html"
    done = melt("report", run_id, "--results", str(root), "-o", str(out))
    assert done.returncode == 0, done.stderr
    page = out.read_text(encoding="utf-8")
    assert not LINK.search(page) and not (tmp_path / "report-traces").exists()
    commands = sorted(html.unescape(c) for c in COMMAND.findall(page))
    assert commands == [f"melt results export {run_id} --format perfetto --job job{i}" for i in range(n)]

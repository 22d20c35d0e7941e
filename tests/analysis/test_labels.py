"""Every output says what its numbers are: simulated, synthetic, emulated, stand-in.

The runs are written through the real store; the commands are the real
``melt`` executable, and the exports are read back with pandas and pyarrow.
"""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone
from io import StringIO
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from melt.analysis import synthetic as syn
from melt.labels import job_labels

MELT = str(Path(sys.executable).parent / "melt")
T0 = datetime(2026, 3, 1, 2, 0, tzinfo=timezone.utc)


def melt(*args: str, results: Path) -> subprocess.CompletedProcess:
    return subprocess.run([MELT, *args, "--results", str(results)], capture_output=True, text=True,
                          timeout=120, env={"COLUMNS": "100", "PATH": "/usr/bin:/bin"})


def measured(rec: dict) -> dict:
    """A record as a real phone running the real llama.cpp writes it."""
    rec = json.loads(json.dumps(rec))
    rec["simulated"] = False
    rec["provenance"].pop("synthetic")
    rec["provenance"]["device"]["simulated"] = False
    return rec


def stand_in(rec: dict, *, old: bool = False) -> dict:
    """MLC's stand-in on a real phone (``old``: as melt wrote it before, marked simulated too)."""
    rec = measured(rec)
    rec["framework"] = "mlc-llm"
    rec["provenance"]["framework_build"]["stand_in"] = True
    rec["stand_in"] = True
    rec["simulated"] = old
    return rec


def write_run(store, cell, make, *, reps=5, factor=1.0, seed=0, when=T0, name="exp"):
    rng = np.random.default_rng(seed)
    run = store.create_run({"name": name}, experiment_path=None, host={})
    run.update(created_at=when.isoformat(timespec="milliseconds"))
    for rep in range(reps):
        rec = syn.job_record(cell, rep, rng=rng, noise=0.01, factor=factor,
                             started=when + timedelta(seconds=10 * rep))
        run.save_job(make(rec), {"stdout.txt": b""})
    run.update(status="complete", total_jobs=reps)
    return run


CELL = syn.Cell(device="pixel-8")


def test_job_labels_say_each_kind_and_a_stand_in_on_a_real_phone_is_not_simulated():
    rng = np.random.default_rng(0)
    rec = syn.job_record(CELL, 0, rng=rng, noise=0.01, factor=1.0, started=T0)
    assert job_labels(rec) == ("simulated", "synthetic")
    assert job_labels(measured(rec)) == ()
    assert job_labels(stand_in(rec)) == ("stand-in",)
    assert job_labels(stand_in(rec, old=True)) == ("stand-in",)  # written before: its device decides
    virtual = stand_in(rec)
    virtual["provenance"]["device"]["simulated"] = True
    assert job_labels(virtual) == ("simulated", "stand-in")
    assert job_labels({**measured(rec), "emulated": True}) == ("emulated",)
    # a record from another host: a malformed flag may add a label, never take one away
    assert job_labels({**measured(rec), "simulated": "no", "emulated": "yes"}) == ("emulated",)
    assert job_labels({"simulated": True, "provenance": "garbage"}) == ("simulated",)


def test_csv_json_and_parquet_exports_carry_stand_in(store, tmp_path):
    run = write_run(store, CELL, stand_in)
    out = melt("results", "export", run.run_id, "--format", "csv", results=store.root)
    assert out.returncode == 0, out.stderr
    csv = pd.read_csv(StringIO(out.stdout))
    assert list(csv["labels"]) == ["stand-in"] * 5
    assert csv["stand_in"].all() and not csv["simulated"].any()
    out = melt("results", "export", run.run_id, "--format", "json", results=store.root)
    rows = json.loads(out.stdout)
    assert {(r["labels"], r["stand_in"], r["simulated"]) for r in rows} == {("stand-in", True, False)}
    pq = tmp_path / "jobs.parquet"
    out = melt("results", "export", run.run_id, "--format", "parquet", "-o", str(pq), results=store.root)
    assert out.returncode == 0, out.stderr
    frame = pd.read_parquet(pq)
    assert list(frame["labels"]) == ["stand-in"] * 5 and frame["stand_in"].all()


def test_a_metric_named_like_a_label_column_does_not_overwrite_it(store):
    def forged(rec):
        rec = stand_in(rec)
        rec["metrics"].update(labels="", stand_in=0, simulated=0)  # from a hostile farm host
        return rec

    from melt.analysis.frames import jobs_frame

    frame = jobs_frame([write_run(store, CELL, forged, reps=2)])
    assert list(frame["labels"]) == ["stand-in", "stand-in"] and frame["stand_in"].all()


def test_llama_bench_exports_carry_every_label(store):
    from melt.analysis.export import bench_jobs, llama_bench_rows

    rows = llama_bench_rows(bench_jobs([write_run(store, CELL, stand_in, reps=2)]))
    assert rows and {(r["melt_labels"], r["melt_stand_in"], r["melt_simulated"]) for r in rows} == {
        ("stand-in", True, False)}
    rows = llama_bench_rows(bench_jobs([write_run(store, CELL, lambda r: r, reps=1)]))
    assert {r["melt_labels"] for r in rows} == {"simulated,synthetic"}


def test_results_show_and_list_name_the_labels(store):
    run = write_run(store, CELL, stand_in, name="mlc-on-phone")
    write_run(store, CELL, measured, name="real", when=T0 + timedelta(days=1))
    show = melt("results", "show", run.run_id, results=store.root)
    assert show.returncode == 0, show.stderr
    assert "pixel-8 (stand-in) · mlc-llm" in show.stdout and "simulated" not in show.stdout
    listing = melt("results", "list", results=store.root)
    assert listing.returncode == 0, listing.stderr
    rows = listing.stdout.split("\n2")  # a run's lines: its id's, then the labels under its status
    (mine,) = [r for r in rows if run.run_id[1:] in r]
    (other,) = [r for r in rows if run.run_id[1:] not in r and "real" in r]
    assert "stand-in" in mine and "simulated" not in mine
    assert "stand-in" not in other and "simulated" not in other
    data = json.loads(melt("results", "list", "--json", results=store.root).stdout)
    assert [r["labels"] for r in data] == [["stand-in"], []]


@pytest.fixture
def simulated_baseline_measured_current(store):
    """Five simulated (virtual-device) repetitions, then five measured ones of the same cell, 10 % slower."""
    def virtual(rec):
        rec = measured(rec)
        rec["simulated"] = rec["provenance"]["device"]["simulated"] = True
        return rec

    base = write_run(store, CELL, virtual, seed=1)
    cur = write_run(store, CELL, measured, seed=2, factor=0.9, when=T0 + timedelta(days=1))
    return store, base, cur


def test_compare_of_a_simulated_baseline_with_a_measured_run_warns_and_exits_3(
        simulated_baseline_measured_current, tmp_path):
    store, base, cur = simulated_baseline_measured_current
    junit = tmp_path / "compare.xml"
    out = melt("compare", base.run_id, cur.run_id, "--junit", str(junit), results=store.root)
    assert out.returncode == 3, out.stderr
    assert "warning: baseline simulated, current measured" in out.stdout
    assert "warning: pixel-8 (simulated) / llama.cpp" in out.stderr
    assert "different labels; 5 regression(s) found" in out.stderr.splitlines()[-1]
    suite = ET.parse(junit).getroot()
    props = {p.get("name"): p.get("value") for p in suite.find("properties")}
    assert props["labels_differ"] == "1" and "different labels" in props["warning"]
    (case,) = suite.findall("testcase")
    cprops = {p.get("name"): p.get("value") for p in case.find("properties")}
    assert cprops["labels"] == "measured" and cprops["baseline_labels"] == "simulated"
    assert "baseline simulated, current measured" in cprops["warning"]
    assert "(simulated)" in case.get("name")
    assert case.find("failure").get("type") == "regression"
    # allowed: the regression's own exit code, the warning still on stderr and in the JSON
    out = melt("compare", base.run_id, cur.run_id, "--allow-mixed-labels", "--json", results=store.root)
    assert out.returncode == 2 and "warning: " in out.stderr
    data = json.loads(out.stdout)
    assert data["labels_differ"] == 1 and data["warnings"]
    assert data["cells"][0]["labels"] == {"baseline": ["simulated"], "current": []}


def test_like_for_like_compare_has_no_warning(store):
    base = write_run(store, CELL, measured, seed=1)
    cur = write_run(store, CELL, measured, seed=2, when=T0 + timedelta(days=1))
    out = melt("compare", base.run_id, cur.run_id, results=store.root)
    assert out.returncode == 0, out.stderr
    assert "warning" not in out.stdout + out.stderr


def test_history_compare_and_table_say_the_labels(store):
    def virtual(rec):
        rec = measured(rec)
        rec["simulated"] = rec["provenance"]["device"]["simulated"] = True
        return rec

    for day in range(3):
        write_run(store, CELL, virtual, seed=day, when=T0 + timedelta(days=day))
    cur = write_run(store, CELL, measured, seed=9, when=T0 + timedelta(days=3))
    ids = [r.run_id for r in store.runs()]
    out = melt("compare", "--history", "3", cur.run_id, results=store.root)
    assert out.returncode == 3 and "baseline simulated, current measured" in out.stdout
    out = melt("history", "--metric", "decode_tps", results=store.root)
    assert out.returncode == 0, out.stderr
    assert "warning: the runs of this cell carry different labels (simulated; measured)" in out.stdout
    rows = [ln for ln in out.stdout.splitlines() if any(i in ln for i in ids)]
    assert sum("simulated" in r for r in rows) == 3 and sum("measured" in r for r in rows) == 1


def notice(html: str, ident: str) -> str | None:
    import re

    found = re.search(rf'<div class="notice" id="{ident}">(.*?)</div>', html, re.S)
    return " ".join(found.group(1).split()) if found else None


def test_report_notices_say_exactly_which_kinds_are_present(store, tmp_path):
    from melt.report.build import build_report

    real_mlc = write_run(store, CELL, stand_in, reps=3)
    info = build_report([real_mlc], tmp_path / "r.html")
    html = info.path.read_text(encoding="utf-8")
    assert notice(html, "simulated-notice") is None and info.simulated_jobs == 0  # measured, not simulated
    text = notice(html, "stand-in-notice")
    assert text and "3 of 3 jobs ran a stand-in" in text and "3 of them were measured on real hardware" in text
    jobs_table = html[html.index('id="jobs-table"'):]
    assert jobs_table.count('<span class="sim">stand-in</span>') == 3 and '">simulated<' not in jobs_table
    assert info.labelled_jobs == {"stand-in": 3}

    generated = syn.make_run(store, [syn.Cell(device="galaxy-s23")], repetitions=2)
    html = build_report([real_mlc, generated], tmp_path / "both.html").path.read_text(encoding="utf-8")
    text = notice(html, "simulated-notice")
    assert text and "2 of 5 jobs are simulated" in text and "2 are synthetic: generated" in text
    assert "virtual devices" not in text  # none ran on one
    assert "3 of 5 jobs ran a stand-in" in notice(html, "stand-in-notice")

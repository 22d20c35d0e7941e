"""`melt results show`, `results list` and `melt parse` in a CI log: 80 columns, not a terminal.

Every line fits 80 columns and every name and number is printed in full (no
column squeezed to nothing, no value cut to "…").
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from melt.analysis import synthetic as syn
from melt.analysis.metrics import format_value, label
from melt.cli.results_view import SHOWN_METRICS

MELT = str(Path(sys.executable).parent / "melt")
PARSERS = Path(__file__).parents[1] / "data" / "parsers"


def melt80(*args: str) -> subprocess.CompletedProcess:
    """melt as a CI job runs it: output piped (not a terminal), $COLUMNS=80."""
    env = {**os.environ, "COLUMNS": "80"}
    env.pop("LINES", None)
    proc = subprocess.run([MELT, *args], capture_output=True, text=True, timeout=120, env=env,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    too_long = [line for line in proc.stdout.splitlines() if len(line) > 80]
    assert not too_long, "\n".join(too_long)
    return proc


def blocks(out: str) -> list[list[str]]:
    """The output's blocks (separated by blank lines), each a list of lines."""
    return [b.splitlines() for b in re.split(r"\n\s*\n", out) if b.strip()]


def squeeze(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def test_results_show_fits_80_columns_with_every_value_in_full(store):
    cells = [syn.Cell(device="virtual-phone", model="gemma3-270m-q4_k_m", workload="bench",
                      params={"n_prompt": 64, "n_gen": n, "threads": 4}) for n in (16, 128)]
    cells.append(syn.Cell(device="jetson-orin-nano-super-devkit", model="llama-3.2-1b-instruct-q8_0",
                          workload="hello", kind="generate", params={"n_prompt": 64, "n_gen": 16}))
    reason = "llama-completion exited 139 (SIGSEGV) after 12.3 s; stderr: " + "ggml_abort " * 20
    run = syn.make_run(store, cells, repetitions=6, seed=4, failed={cells[2].cell_id: reason})
    out = melt80("results", "show", run.run_id, "--results", str(store.root)).stdout
    assert run.run_id in out
    jobs = run.jobs()
    for cell in cells:
        swept = f"n_gen={cell.params['n_gen']}" if cell.workload == "bench" else ""  # only swept ones shown
        block = next(b for b in blocks(out) if cell.model in squeeze(" ".join(b)) and swept in " ".join(b))
        head = squeeze(" ".join(b for b in block if not b.startswith("  ")))
        for value in (cell.device, "(simulated, synthetic)", "llama.cpp", cell.model, cell.workload):
            assert value in head, (value, block)
        mine = sorted((j for j in jobs if j["cell_id"] == cell.cell_id), key=lambda j: j["repetition"])
        if mine[0]["status"] != "ok":
            body = squeeze(" ".join(block))
            assert "reps 0, 1, 2, 3, 4, 5 failed:" in body and squeeze(reason) in body  # wrapped, never cut
            continue
        heads = [b for b in block if b.strip().startswith("metric")]
        assert len(heads) >= 2  # six repetitions and the median do not fit one line of 80 columns
        assert squeeze(" ".join(h.replace("metric", "") for h in heads)) == \
            "median " + " ".join(f"rep {r}" for r in range(6))
        for metric in ("prefill_tps", "decode_tps", "energy_per_token_decode_j", "peak_rss_bytes", "temp_max_c"):
            assert metric in SHOWN_METRICS
            rows = [b.strip()[len(label(metric)):] for b in block if b.strip().startswith(label(metric) + " ")]
            values = [j["metrics"][metric] for j in mine]
            expected = [format_value(metric, statistics.median(values))] + [format_value(metric, v) for v in values]
            assert squeeze(" ".join(rows)) == " ".join(expected), (metric, rows)
    assert "…" not in out.split("provenance of the first job")[0]


def column(out: str, name: str, nxt: str, run_id: str) -> str:
    """The text of column ``name`` (up to column ``nxt``) in the row of ``run_id``, wrapped lines joined."""
    lines = out.splitlines()
    header = next(line for line in lines if name in line and nxt in line)
    start, end = header.index(name), header.index(nxt)
    i = next(i for i, line in enumerate(lines) if run_id in line)
    parts = [lines[i][start:end].strip()]
    for line in lines[i + 1:]:
        if not line.strip() or line[:start].strip():
            break
        parts.append(line[start:end].strip())
    return "".join(parts)


def test_results_list_fits_80_columns(store):
    long_name = "nightly-regression-gate-pixel-8-and-jetson-orin"
    failing = syn.make_run(store, [syn.Cell()], repetitions=2, name=long_name,
                           failed={syn.Cell().cell_id: "x"})
    fine = syn.make_run(store, [syn.Cell()], repetitions=2, name="quickstart")
    out = melt80("results", "list", "--results", str(store.root)).stdout
    assert "…" not in out
    assert column(out, "experiment", "status", failing.run_id) == long_name
    assert column(out, "experiment", "status", fine.run_id) == "quickstart"
    rows = {r: next(line for line in out.splitlines() if r in line) for r in (failing.run_id, fine.run_id)}
    assert "complete-with-failures" in rows[failing.run_id] and rows[failing.run_id].rstrip().endswith("0/2")
    assert " complete " in rows[fine.run_id] and rows[fine.run_id].rstrip().endswith("2/2")


@pytest.mark.parametrize("capture", ["tegrastats_agx_orin64.log", "llamabench_md_jetson_nano_b5043_gemma3.txt",
                                     "mlc_jetson_benchmark_issue412.txt", "thermal_zones_grep_orin_nano_sysfs.txt",
                                     "android_dumpsys_meminfo_settings_a12plus.txt"])
def test_parse_fits_80_columns(capture):
    import json

    out = melt80("parse", str(PARSERS / capture)).stdout
    records = json.loads(melt80("parse", str(PARSERS / capture), "--json").stdout)["records"]
    assert "…" not in out
    words = squeeze(out)
    for rec in records:
        for key, value in rec.items():
            if isinstance(value, (int, float, str)) and not isinstance(value, bool):
                text = f"{value:g}" if isinstance(value, float) else str(value)
                # a table cell or "key: value", never broken inside a word
                assert f" {squeeze(text)} " in f" {words.replace('│', ' ')} ", (capture, key, value)

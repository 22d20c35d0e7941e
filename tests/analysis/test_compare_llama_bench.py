"""llama.cpp's own compare-llama-bench.py reads melt's llama-bench exports of two real runs.

The script comes from the very source tree melt builds (the pinned sdist,
unpacked in melt's cache); the runs are real llama-bench jobs with Gemma 3
270M on this machine.
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from melt.analysis.export import FIELDS
from tests.helpers import last_line, melt

pytestmark = pytest.mark.slow

EXPERIMENT = """
name: interop
devices: [local]
models: [{{name: gemma, path: {model}}}]
workloads:
  - {{name: bench, kind: bench, n_prompt: [8], n_gen: [4], threads: [1], repetitions: 1}}
repetitions: {reps}
warmup: 0
"""


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, gemma_model, llamacpp_host_build):
    """Two runs of one cell: A with one job, B with two (melt repetitions are separate jobs)."""
    root = tmp_path_factory.mktemp("interop")
    results = root / "results"
    ids = []
    for name, reps in (("a", 1), ("b", 2)):
        exp = root / f"{name}.yaml"
        exp.write_text(EXPERIMENT.format(model=gemma_model, reps=reps))
        out = melt("run", str(exp), "--results", str(results), timeout=300)
        assert out.returncode == 0, out.stderr
        ids.append(last_line(out.stdout))
    return results, ids


def _printed(results: Path, run_id: str) -> list[dict]:
    """llama-bench's own rows of a run, read straight from each job's stdout."""
    rows = []
    for job_dir in sorted((results / run_id / "jobs").iterdir()):
        for line in (job_dir / "stdout.txt").read_text().splitlines():
            if line.startswith("{"):
                rows.append(json.loads(line))
    return rows


def _export(results: Path, run_id: str, fmt: str, dest: Path) -> Path:
    out = melt("results", "export", run_id, "--format", f"llama-bench-{fmt}", "--build-commit", "run",
               "-o", str(dest), "--results", str(results))
    assert out.returncode == 0, out.stderr
    return dest


def _compare(source: Path, cwd: Path, inputs: list[Path], base: str, comp: str) -> dict[str, tuple]:
    """Run the script; {test name: (t/s baseline, t/s compare)} from its table.

    ``-t llama-bench``: the script picks the tool itself only for SQLite files.
    """
    script = source / "scripts" / "compare-llama-bench.py"
    argv = [sys.executable, str(script), "-t", "llama-bench", *(a for p in inputs for a in ("-i", str(p))),
            "-b", base, "-c", comp]
    out = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr + out.stdout
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header[-4:] == ["Test", f"t/s {base}", f"t/s {comp}", "Speedup"], header
    table = {}
    for ln in lines[2:]:
        cells = [c.strip() for c in ln.strip("|").split("|")]
        table[cells[-4]] = (float(cells[-3]), float(cells[-2]))
    return table


def _mean_ts(rows: list[dict], test: str) -> float:
    picked = [r["avg_ts"] for r in rows
              if (f"pp{r['n_prompt']}" if r["n_prompt"] else f"tg{r['n_gen']}") == test]
    return sum(picked) / len(picked)


def test_compare_llama_bench_reads_jsonl_json_and_sql(tmp_path, two_runs, llamacpp_source):
    results, (run_a, run_b) = two_runs
    printed_a, printed_b = _printed(results, run_a), _printed(results, run_b)
    assert len(printed_a) == 2 and len(printed_b) == 4  # pp and tg per job; B's two jobs stay two rows
    expected = {t: (round(_mean_ts(printed_a, t), 2), round(_mean_ts(printed_b, t), 2)) for t in ("pp8", "tg4")}

    # jsonl: one file, as appending two llama-bench -o jsonl outputs would give
    a, b = (_export(results, r, "jsonl", tmp_path / f"{r}.jsonl") for r in (run_a, run_b))
    both = tmp_path / "both.jsonl"
    both.write_text(a.read_text() + b.read_text())
    rows = [json.loads(x) for x in both.read_text().splitlines()]
    # llama-bench's fields as printed, melt's name nowhere in them
    for got, raw in zip(rows, printed_a + printed_b):
        assert {k: v for k, v in got.items() if k != "build_commit"} | {"build_commit": raw["build_commit"]} \
            == {**raw, **{k: v for k, v in got.items() if k.startswith("melt_")}}
        assert got["cpu_info"] == raw["cpu_info"] and got["melt_device"] == "local"
        assert got["melt_reconstructed"] == ""
    assert _compare(llamacpp_source, tmp_path, [both], run_a, run_b) == expected

    # json: one file per run
    jsons = [_export(results, r, "json", tmp_path / f"{r}.json") for r in (run_a, run_b)]
    assert _compare(llamacpp_source, tmp_path, jsons, run_a, run_b) == expected

    # sql: both piped into one database, as llama-bench -o sql | sqlite3 would be
    db_path = tmp_path / "llama-bench.sqlite"
    db = sqlite3.connect(db_path)
    for r in (run_a, run_b):
        db.executescript(_export(results, r, "sql", tmp_path / f"{r}.sql").read_text())
    db.close()
    assert _compare(llamacpp_source, tmp_path, [db_path], run_a, run_b) == expected


def test_fields_are_those_of_the_llama_bench_melt_builds(llamacpp_source):
    """:data:`FIELDS` (used for reconstructed rows) follows llama-bench.cpp's get_fields()."""
    text = (llamacpp_source / "tools" / "llama-bench" / "llama-bench.cpp").read_text()
    body = re.search(r"get_fields\(\)\s*\{\s*static const std::vector<std::string> fields = \{(.*?)\};",
                     text, re.DOTALL)
    assert body, "llama-bench.cpp has no get_fields() list any more"
    assert re.findall(r'"(\w+)"', body.group(1)) == [n for n, _ in FIELDS]

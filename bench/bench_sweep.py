"""Benchmark of a llama-bench sweep of short jobs: `melt run` against the same calls made bare.

Not a test: it prints the figures recorded in docs/benchmarks.md ("Sweeps of short jobs").

    python bench/bench_sweep.py [--prompts 64,128,256,512] [--gens 16,32,64] [--threads 1,2,4]
                                [--reps 3] [--profile FILE] [--abi host]

The sweep is llama-bench's typical first look at a phone, ``-p 64,128,256,512
-n 16,32,64 -t 1,2,4``: 36 cells, each repeated ``--reps`` times, on gemma3-270m
on melt's virtual phone (device_configs/virtual-phone.yaml: telemetry, cool-down,
screen and charging state) behind a real adb server, the phone reporting this
machine's ABI (the host build runs natively). Threads above the machine's core
count are kept as the sweep asks; they share the cores.

One unmeasured ``melt run`` of one cell stages the binary and the model; then,
in this order so that a drift of the machine's load shows:

- bare: for each cell, one ``adb shell`` llama-bench call of the very command
  melt runs (the staged job's, with the cell's ``-p -n -t``) with ``-r REPS``:
  one process per cell, as a user sweeping by hand would call it;
- melt: one ``melt run`` of the whole sweep as its own process (REPS jobs per
  cell, each with its own record, energy, thermal and memory figures);
- bare again, the same calls; the ratio is against the mean of both passes;
- bare per job: the same calls with ``-r 1``, REPS times per cell (one process per
  job, as melt runs them): what the process count alone costs.

Target (issue 28): melt <= 1.15 x bare. The breakdown reads the stored records:
the time inside each job's llama-bench window, the rest of each job in the
worker (telemetry, health, cool-down), the gaps between jobs (storing the
record, the next job's set-up) and the process's start and end.
``--profile FILE`` also runs the first four cells under cProfile and prints
its top entries.
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import re
import shutil
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from _common import machine, run  # bench/ is on sys.path when a bench runs
from bench_overhead import PHONE_CONFIG, bare_shell, device_yaml, melt_run

from melt.devices.abi import host_abi
from melt.virtual.config import load_config
from melt.virtual.testing import adb_available, adb_server, virtual_phone

TARGET = 1.15

EXPERIMENT = """
name: sweep
devices: [{device}]
frameworks: [{{name: llama.cpp}}]
models: [{{name: gemma, path: {model}}}]
workloads:
  - {{name: bench, kind: bench, n_prompt: {prompts}, n_gen: {gens}, threads: {threads}, repetitions: 1}}
repetitions: {reps}
warmup: 0
"""


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def records(results: Path, run_id: str) -> list[dict]:
    """The run's job records, in the order they started."""
    out = [json.loads(p.read_text()) for p in (results / run_id / "jobs").glob("*/result.json")]
    return sorted(out, key=lambda r: r["started_at"])


def with_flags(command: list[str], **flags: int) -> list[str]:
    """The bare ``adb shell`` arguments with llama-bench's ``-p``/``-n``/``-t``/``-r`` set."""
    text = command[1]
    for flag, value in flags.items():
        text, n = re.subn(rf" -{flag} \d+( |$)", rf" -{flag} {value}\1", text)
        if n != 1:
            raise SystemExit(f"no -{flag} in the staged command: {text}")
    return [command[0], text]


def _t(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


def breakdown(recs: list[dict], started: float, ended: float) -> dict[str, float]:
    """Where a melt run's wall time went (seconds), from its records' stamps.

    ``started``/``ended``: the process's wall-clock start and end.
    """
    inside = sum(r["metrics"].get("wall_s") or 0.0 for r in recs)
    in_jobs = sum(_t(r["finished_at"]) - _t(r["started_at"]) for r in recs)
    gaps = sum(max(0.0, _t(b["started_at"]) - _t(a["finished_at"])) for a, b in zip(recs, recs[1:]))
    cool = sum((r["provenance"].get("cooldown") or {}).get("waited_s") or 0.0 for r in recs)
    idle = sum(1 for r in recs if (r["provenance"].get("idle_baseline") or {}).get("measured_in") == "this job")
    return {"llama-bench windows": inside, "telemetry around them": in_jobs - inside - cool,
            "cool-down waits": cool, "between jobs (store, next set-up)": gaps,
            "process start to first job": _t(recs[0]["started_at"]) - started,
            "last job to process end": ended - _t(recs[-1]["finished_at"]),
            "idle baselines measured": float(idle)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=ints, default=[64, 128, 256, 512], help="-p values")
    ap.add_argument("--gens", type=ints, default=[16, 32, 64], help="-n values")
    ap.add_argument("--threads", type=ints, default=[1, 2, 4], help="-t values")
    ap.add_argument("--reps", type=int, default=3, help="repetitions of each cell")
    ap.add_argument("--profile", type=Path, help="also profile a melt run of four cells into this file")
    ap.add_argument("--no-per-job", action="store_true", help="skip the bare one-process-per-job pass")
    ap.add_argument("--keep", type=Path, help="copy the stored runs into this folder")
    ap.add_argument("--abi", default="host", help="the phone's ABI: host (default, native) or arm64-v8a")
    args = ap.parse_args()
    if not adb_available():
        print("adb is not installed (apt-get install adb): cannot run this benchmark", file=sys.stderr)
        return 1
    from melt.frameworks.llamacpp.build import host_build
    from melt.models.catalog import ensure_model

    print(f"machine: {machine()}")
    host_build()
    model = ensure_model("gemma3-270m")
    abi = host_abi() if args.abi == "host" else args.abi
    cells = len(args.prompts) * len(args.gens) * len(args.threads)
    print(f"phone ABI: {abi}; sweep -p {args.prompts} -n {args.gens} -t {args.threads}: "
          f"{cells} cells x {args.reps} repetitions")
    if max(args.threads) > (os.cpu_count() or 1):
        print(f"note: threads up to {max(args.threads)} on {os.cpu_count()} cores: those cells share cores")
    phone_config = load_config(PHONE_CONFIG).model_copy(update={"abi": abi})
    with tempfile.TemporaryDirectory(prefix="melt-bench-sweep-") as tmp, adb_server() as adb, \
            virtual_phone(phone_config, state_dir=Path(tmp) / "phone") as phone:
        tmp = Path(tmp)
        serial = adb.connect(phone.address)
        device = tmp / "phone.yaml"
        device.write_text(device_yaml(phone.address, adb.port))

        def experiment(name: str, prompts: list[int], gens: list[int], threads: list[int], reps: int) -> Path:
            path = tmp / f"{name}.yaml"
            path.write_text(EXPERIMENT.format(device=device, model=model, prompts=prompts, gens=gens,
                                              threads=threads, reps=reps))
            return path

        results = tmp / "results"
        _, first = melt_run(experiment("stage", args.prompts[:1], args.gens[:1], args.threads[:1], 1), results)
        staged = records(results, first)[0]
        if staged["status"] != "ok":
            raise SystemExit(f"the staging job failed: {staged['reason']}")

        sweep = experiment("sweep", args.prompts, args.gens, args.threads, args.reps)
        # the bare commands: the very one melt ran, with each cell's values
        staged_cmd = bare_shell(staged)
        commands = [with_flags(staged_cmd, p=p, n=n, t=t) for p in args.prompts for n in args.gens
                    for t in args.threads]

        def bare_pass(reps_per_call: int, calls_per_cell: int) -> float:
            total = 0.0
            for cmd in commands:
                for _ in range(calls_per_cell):
                    t = time.perf_counter()
                    out = adb.run("-s", serial, *with_flags(cmd, r=reps_per_call), timeout=600)
                    total += time.perf_counter() - t
                    if out.returncode != 0:
                        raise SystemExit(f"bare llama-bench failed: {out.stderr.strip()[-500:]}")
            return total

        bare_before = bare_pass(args.reps, 1)
        started = time.time()
        melt_s, run_id = melt_run(sweep, results)
        ended = time.time()
        recs = records(results, run_id)
        failed = [r for r in recs if r["status"] != "ok"]
        ran = {r["provenance"].get("command") for r in recs if r["status"] == "ok"}
        env = len(staged_cmd[1]) - len(staged["provenance"]["command"])  # the env prefix's length
        wanted = {with_flags(c, r=1)[1][env:] for c in commands}
        if not wanted <= {c for c in ran if c}:
            raise SystemExit("the bare commands are not the ones melt ran")
        bare_after = bare_pass(args.reps, 1)
        bare_s = (bare_before + bare_after) / 2
        per_job_s = None if args.no_per_job else bare_pass(1, args.reps)

        print(f"\nbare, one call per cell (-r {args.reps}): {bare_s:8.2f} s "
              f"(before melt {bare_before:.2f} s, after {bare_after:.2f} s)")
        if per_job_s is not None:
            print(f"bare, one call per job  (-r 1):  {per_job_s:8.2f} s")
        print(f"melt run ({len(recs)} jobs, {len(failed)} failed):  {melt_s:8.2f} s")
        print(f"\nratio: {melt_s / bare_s:.2f}x bare per cell"
              + (f", {melt_s / per_job_s:.2f}x bare per job" if per_job_s else "")
              + f"; {(melt_s - bare_s) / len(recs):+.2f} s per job")
        print("\nwhere melt's time went:")
        for name, value in breakdown(recs, started, ended).items():
            unit = "" if name.startswith("idle") else " s"
            print(f"  {name:38} {value:8.2f}{unit}" + ("" if unit == "" else f"  ({value / len(recs):.3f} s per job)"))
        measured = [r for r in recs if r["status"] == "ok"]
        have = {k: sum(1 for r in measured if k in r["metrics"])
                for k in ("energy_decode_j", "temp_max_c", "peak_rss_bytes")}
        print(f"\nmeasured per job ({len(measured)} ok): " + ", ".join(f"{k} {v}" for k, v in have.items()))
        if args.keep:
            shutil.copytree(results, args.keep, dirs_exist_ok=True)
        met = melt_s <= TARGET * bare_s
        print(f"target: melt <= {TARGET} x bare = {TARGET * bare_s:.2f} s: {'met' if met else 'NOT met'}")

        if args.profile:
            small = experiment("profiled", args.prompts[:2], args.gens[:1], args.threads[:2], args.reps)
            melt_run(small, results, profile=args.profile)
            print(f"\nprofile of a melt run of 4 cells ({args.profile}), by cumulative time:")
            pstats.Stats(str(args.profile)).sort_stats("cumulative").print_stats(30)
        return 0 if met else 2


if __name__ == "__main__":
    run(main)

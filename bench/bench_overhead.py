"""Benchmark of melt's per-job overhead: `melt run` against a bare `adb shell llama-bench`.

Not a test: it prints the figures recorded in docs/benchmarks.md.

    python bench/bench_overhead.py [--runs 5] [--profile FILE] [--binaries DIR] [--model GGUF]

The job is llama-bench ``-p 128 -n 64 -r 1 -t 1`` on gemma3-270m, on melt's
virtual phone (device_configs/virtual-phone.yaml: telemetry on, cool-down,
screen and charging state) behind a real adb server. The phone reports
this machine's ABI and runs the host build natively, as `make demo`'s does:
under qemu-user (``--abi arm64-v8a``) both sides would run emulated code and
the ratio would say more about qemu than about melt. One unmeasured
``melt run`` first stages the binaries and the model and leaves the phone
as a user's second run finds it; then, interleaved so that both see the
same machine load:

- a bare ``adb shell LD_LIBRARY_PATH=... llama-bench ...`` of the very
  command melt ran (the staged binary and model);
- ``melt run`` of a one-job experiment, as its own process (Python start-up,
  config, connecting, staging check, cool-down, telemetry, storing: all of it).

Target (issue 10): melt <= 1.10 x bare + 3 s per run. ``--profile FILE``
also runs one more ``melt run`` under cProfile and prints its top entries.
``--binaries`` uses a folder of prebuilt llama.cpp binaries instead of melt's
build, ``--model`` another model file.

An isolated adb server on a free loopback port, one virtual phone and the
temporary folders are all removed at the end; the llama.cpp build and the
model come from melt's cache (built / fetched when missing).
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import machine, run  # bench/ is on sys.path when a bench runs

from melt.devices.abi import host_abi
from melt.virtual.config import load_config
from melt.virtual.testing import adb_available, adb_server, virtual_phone

ROOT = Path(__file__).resolve().parent.parent
PHONE_CONFIG = ROOT / "device_configs" / "virtual-phone.yaml"

EXPERIMENT = """
name: overhead
devices: [{device}]
frameworks: [{framework}]
models: [{{name: gemma, path: {model}}}]
workloads:
  - {{name: bench, kind: bench, n_prompt: 128, n_gen: 64, threads: 1, repetitions: 1}}
repetitions: 1
warmup: 0
"""


def device_yaml(address: str, adb_port: int) -> str:
    """The virtual-phone config, pointed at this benchmark's phone and adb server."""
    text = PHONE_CONFIG.read_text()
    out = []
    for line in text.splitlines():
        if line.startswith("adb:"):
            out.append(f"adb: {{connect: '{address}', server_port: {adb_port}}}")
        elif line.startswith("  connect:") and out and out[-1].startswith("adb:"):
            continue
        else:
            out.append(line)
    return "\n".join(out) + "\n"


def melt_run(experiment: Path, results: Path, *, profile: Path | None = None) -> tuple[float, str]:
    """One ``melt run`` as a process; (wall seconds, run id)."""
    prefix = [sys.executable, "-m", "cProfile", "-o", str(profile)] if profile else [sys.executable]
    t = time.perf_counter()
    out = subprocess.run([*prefix, "-m", "melt.cli.main", "run", str(experiment), "--results", str(results)],
                         capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t
    if out.returncode != 0:
        raise SystemExit(f"melt run failed ({out.returncode}): {out.stderr.strip()[-800:]}")
    return wall, out.stdout.strip().splitlines()[-1]


def job_of(results: Path, run_id: str) -> dict:
    jobs = results / run_id / "jobs"
    return json.loads(next(jobs.glob("*/result.json")).read_text())


def bare_shell(job: dict) -> list[str]:
    """``adb shell`` arguments that run the very command a stored job ran, with its environment."""
    env = job["provenance"]["env"]
    return ["shell", " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()) + " "
            + job["provenance"]["command"]]


def verdict(bare_s: list[float], melt_s: list[float]) -> bool:
    """Print the totals against the target (melt <= 1.10 x bare + 3 s per run); whether it is met."""
    b, m, runs = sum(bare_s), sum(melt_s), len(melt_s)
    allowed = 1.10 * b + 3.0 * runs
    print(f"\ntotal: bare {b:.2f} s, melt {m:.2f} s: {m / b:.2f}x bare, "
          f"{(m - b) / runs:+.2f} s per run (median {statistics.median(melt_s):.2f} s vs "
          f"{statistics.median(bare_s):.2f} s)")
    print(f"target: melt <= 1.10 x bare + 3 s per run = {allowed:.2f} s: {'met' if m <= allowed else 'NOT met'}")
    return m <= allowed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5, help="measured runs of each")
    ap.add_argument("--profile", type=Path, help="also profile one melt run into this file (cProfile)")
    ap.add_argument("--binaries", type=Path, help="prebuilt llama.cpp binaries instead of melt's build")
    ap.add_argument("--model", type=Path, help="a model file instead of gemma3-270m")
    ap.add_argument("--abi", default="host", help="the phone's ABI: host (default, native) or arm64-v8a "
                    "(the arm64 build under qemu-user)")
    args = ap.parse_args()
    if not adb_available():
        print("adb is not installed (apt-get install adb): cannot run this benchmark", file=sys.stderr)
        return 1
    from melt.frameworks.llamacpp.build import host_build
    from melt.models.catalog import ensure_model

    print(f"machine: {machine()}")
    framework = "{name: llama.cpp}"
    if args.binaries:
        framework = f"{{name: llama.cpp, binaries: '{args.binaries.resolve()}'}}"
    else:
        host_build()
    model = args.model.resolve() if args.model else ensure_model("gemma3-270m")
    abi = host_abi() if args.abi == "host" else args.abi
    phone_config = load_config(PHONE_CONFIG).model_copy(update={"abi": abi})
    print(f"phone ABI: {abi}")
    with tempfile.TemporaryDirectory(prefix="melt-bench-overhead-") as tmp, adb_server() as adb, \
            virtual_phone(phone_config, state_dir=Path(tmp) / "phone") as phone:
        tmp = Path(tmp)
        serial = adb.connect(phone.address)
        device = tmp / "phone.yaml"
        device.write_text(device_yaml(phone.address, adb.port))
        experiment = tmp / "overhead.yaml"
        experiment.write_text(EXPERIMENT.format(device=device, model=model, framework=framework))
        results = tmp / "results"

        _, first = melt_run(experiment, results)  # stages binaries and model: not measured
        job = job_of(results, first)
        if job["status"] != "ok":
            raise SystemExit(f"the job failed: {job['reason']}")
        bare = bare_shell(job)
        print(f"bare command: adb {' '.join(bare)}")

        melt_s, bare_s, phases = [], [], []
        for _ in range(args.runs):
            t = time.perf_counter()
            out = adb.run("-s", serial, *bare, timeout=300)
            bare_s.append(time.perf_counter() - t)
            if out.returncode != 0:
                raise SystemExit(f"bare llama-bench failed: {out.stderr.strip()[-500:]}")
            wall, run_id = melt_run(experiment, results)
            melt_s.append(wall)
            j = job_of(results, run_id)
            phases.append((j["provenance"].get("phase_source", {}).get("method"),
                           j["provenance"].get("idle_baseline", {}).get("measured_in"),
                           j["provenance"].get("cooldown", {}).get("waited_s"),
                           j["metrics"].get("wall_s")))

        print(f"\n{'run':>4} {'bare s':>8} {'melt s':>8} {'ratio':>6} {'job s':>6} {'cool s':>6}  "
              "phases / idle baseline")
        for i, (b, m, ph) in enumerate(zip(bare_s, melt_s, phases), 1):
            print(f"{i:>4} {b:8.2f} {m:8.2f} {m / b:6.2f} {ph[3] or 0:6.2f} {ph[2] or 0:6.2f}  {ph[0]} / {ph[1]}")
        met = verdict(bare_s, melt_s)

        if args.profile:
            melt_run(experiment, results, profile=args.profile)
            print(f"\nprofile of one melt run ({args.profile}), by cumulative time:")
            pstats.Stats(str(args.profile)).sort_stats("cumulative").print_stats(25)
        return 0 if met else 2


if __name__ == "__main__":
    run(main)

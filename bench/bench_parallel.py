"""Benchmark of the local executor: jobs per second with 1, 2, 4, 8 virtual phones on one host.

Not a test: it prints the figures recorded in docs/benchmarks.md.

    python bench/bench_parallel.py [--phones 1,2,4,8] [--jobs-per-phone 3] [--idle-s 10] [--binaries DIR]

Each phone is melt's virtual phone (its own process), reached through an
isolated real adb server. Each job is a real one through ``melt run``'s code
path (``run_experiment``: build cache, staging, telemetry, store): llama.cpp
``generate`` of 4 tokens on melt's tiny model under the on-device sampler
at 2 Hz, after an idle baseline of ``--idle-s`` seconds, on phones whose
physical model steps at 10 Hz. That workload is light on purpose: the device
mostly waits, so this machine's cores are not what limits N phones, and the
figure measures the executor — whether N devices really run side by side.

Throughput is jobs / (last job's end - first job's start) over the stored
records (staging excluded); the target is >= 0.9 x N times one phone's.
Everything it starts is stopped at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from _common import machine, run  # bench/ is on sys.path when a bench runs

from melt.devices.abi import host_abi
from melt.virtual.config import RatesParams, VirtualPhoneConfig
from melt.virtual.testing import adb_available, adb_server, virtual_phone

TARGET = 0.9

EXPERIMENT = """
name: parallel-{n}
devices: [{devices}]
models: [{{name: tiny, path: {model}}}]
workloads:
  - {{name: gen, kind: generate, prompt: "Hello", n_predict: 4, threads: 1}}
repetitions: {reps}
warmup: 0
"""


def phone_yaml(name: str, address: str, adb_port: int, idle_s: float) -> str:
    return (f"name: {name}\nkind: android\nbuild_profile: host\n"
            f"adb: {{connect: '{address}', server_port: {adb_port}}}\n"
            f"virtual: {{}}\ntelemetry: {{idle_s: {idle_s}, sample_hz: 2, slow_every: 1, clock_probes: 4}}\n")


def stamp(s: str) -> float:
    return datetime.fromisoformat(s).timestamp()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--phones", default="1,2,4,8")
    ap.add_argument("--jobs-per-phone", type=int, default=3)
    ap.add_argument("--idle-s", type=float, default=10.0)
    ap.add_argument("--binaries", type=Path, default=None,
                    help="a folder of llama.cpp host binaries to use instead of the cached host build")
    args = ap.parse_args()
    if not adb_available():
        print("adb is not installed", file=sys.stderr)
        return 1
    counts = [int(x) for x in args.phones.split(",")]
    from melt.frameworks.llamacpp.build import host_build
    from melt.models.tiny import write_tiny_model
    from melt.runner.engine import run_experiment

    print(machine())
    if args.binaries is None:
        host_build()
    frameworks = f"frameworks: [{{name: llama.cpp, binaries: {args.binaries.resolve()}}}]\n" if args.binaries else ""
    rows = []
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="melt-bench-parallel-")))
        adb = stack.enter_context(adb_server())
        model = write_tiny_model(tmp / "tiny.gguf", seed=1)
        phones = []
        # the phones' own physical model runs at low rates: at its defaults (100 Hz) eight idle
        # phones alone would take most of a core here, and the cores would be the limit
        config = VirtualPhoneConfig(abi=host_abi(), rates=RatesParams(tick_hz=10, cpu_sample_hz=5, sysfs_hz=2))
        for i in range(max(counts)):
            phone = stack.enter_context(virtual_phone(config, state_dir=tmp / f"phone-{i}"))
            adb.connect(phone.address)
            (tmp / f"p{i}.yaml").write_text(phone_yaml(f"p{i}", phone.address, adb.port, args.idle_s))
            phones.append(phone)
        # stage binaries and the model on every phone once, so runs measure jobs only
        warm = tmp / "warm.yaml"
        warm.write_text(EXPERIMENT.format(n=0, devices=", ".join(str(tmp / f"p{i}.yaml") for i in range(len(phones))),
                                          model=model, reps=1) + frameworks)
        run_experiment(warm, results_dir=tmp / "results")
        base = None
        for n in counts:
            exp = tmp / f"exp{n}.yaml"
            exp.write_text(EXPERIMENT.format(n=n, devices=", ".join(str(tmp / f"p{i}.yaml") for i in range(n)),
                                             model=model, reps=args.jobs_per_phone) + frameworks)
            t = time.monotonic()
            result = run_experiment(exp, results_dir=tmp / "results")
            wall = time.monotonic() - t
            jobs = result.jobs()
            ok = sum(j["status"] == "ok" for j in jobs)
            span = max(stamp(j["finished_at"]) for j in jobs) - min(stamp(j["started_at"]) for j in jobs)
            rate = len(jobs) / span
            base = base or rate
            rows.append((n, len(jobs), ok, span, wall, rate, rate / base, rate / (base * n)))
            print(f"{n} phones: {len(jobs)} jobs ({ok} ok) in {span:.1f} s -> {rate:.3f} jobs/s, "
                  f"{rate / base:.2f}x one phone ({rate / (base * n):.2f} of {n}x)", flush=True)
    print("\n| phones | jobs | ok | span s | run wall s | jobs/s | x one phone | / N |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for n, total, ok, span, wall, rate, speedup, eff in rows:
        print(f"| {n} | {total} | {ok} | {span:.1f} | {wall:.1f} | {rate:.3f} | {speedup:.2f} | {eff:.2f} |")
    failing = [n for n, *_, eff in rows if eff < TARGET]
    print(f"target >= {TARGET} x N: " + ("holds" if not failing else f"missed for {failing} phones"))
    return 0 if not failing and all(r[2] == r[1] for r in rows) else 1


if __name__ == "__main__":
    run(main)

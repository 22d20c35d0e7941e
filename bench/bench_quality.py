"""Benchmark of a quality job: `melt run` against a bare `adb shell llama-perplexity`.

Not a test: it prints the figures recorded in docs/benchmarks.md.

    python bench/bench_quality.py [--runs 3] [--chunks 2] [--ctx 256] [--abi host]

The job is a ``quality`` workload on gemma3-270m against ``reference: host``
(llama-perplexity's KL-divergence mode over melt's shipped text, ``--chunks``
chunks of ``--ctx`` tokens, one thread), on melt's virtual phone
(device_configs/virtual-phone.yaml: telemetry on, cool-down, screen and
charging state) behind a real adb server. One unmeasured ``melt run``
first computes the base logits on this machine, stages the binaries, the
model and the logits, and leaves the phone as a user's second run finds it;
then, interleaved so that both see the same machine load:

- a bare ``adb shell LD_LIBRARY_PATH=... llama-perplexity ...`` of the very
  command melt ran (the staged binary, model, text and base logits);
- ``melt run`` of the one-job experiment, as its own process (start-up,
  config, the base-logits cache check, connecting, staging check, cool-down,
  telemetry, parsing, storing).

Target (issue 23): melt <= 1.10 x bare + 3 s per run. The bare call's
perplexity must equal the one melt stored: both ran the same command.

The adb server, the phone and the temporary folders are removed at the end;
the llama.cpp build, the model and the base logits come from melt's cache.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

from _common import machine, run  # bench/ is on sys.path when a bench runs
from bench_overhead import PHONE_CONFIG, bare_shell, device_yaml, job_of, melt_run, verdict

from melt.devices.abi import host_abi
from melt.virtual.config import load_config
from melt.virtual.testing import adb_available, adb_server, virtual_phone

EXPERIMENT = """
name: quality-overhead
devices: [{device}]
frameworks: [{{name: llama.cpp}}]
models: [{{name: gemma, path: {model}}}]
workloads:
  - {{name: vs-host, kind: quality, ctx: {ctx}, chunks: {chunks}, reference: host, threads: 1}}
repetitions: 1
warmup: 0
"""

#: the perplexity llama-perplexity printed: "Final estimate: PPL = x" without a reference,
#: "Mean PPL(Q) : x" in its KL-divergence block with one
FINAL = re.compile(r"(?:Final estimate: PPL =|Mean\s+PPL\(Q\)\s*:)\s*([0-9.]+)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3, help="measured runs of each")
    ap.add_argument("--chunks", type=int, default=2, help="chunks of the text to score")
    ap.add_argument("--ctx", type=int, default=256, help="tokens per chunk")
    ap.add_argument("--abi", default="host", help="the phone's ABI: host (default, native) or arm64-v8a "
                    "(the arm64 build under qemu-user)")
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
    phone_config = load_config(PHONE_CONFIG).model_copy(update={"abi": abi})
    print(f"phone ABI: {abi}; {args.chunks} chunks of {args.ctx} tokens against reference: host")
    with tempfile.TemporaryDirectory(prefix="melt-bench-quality-") as tmp, adb_server() as adb, \
            virtual_phone(phone_config, state_dir=Path(tmp) / "phone") as phone:
        tmp = Path(tmp)
        serial = adb.connect(phone.address)
        device = tmp / "phone.yaml"
        device.write_text(device_yaml(phone.address, adb.port))
        experiment = tmp / "quality.yaml"
        experiment.write_text(EXPERIMENT.format(device=device, model=model, ctx=args.ctx, chunks=args.chunks))
        results = tmp / "results"

        first_s, first = melt_run(experiment, results)  # base logits, staging: not measured
        job = job_of(results, first)
        if job["status"] != "ok":
            raise SystemExit(f"the job failed: {job['reason']}")
        print(f"first run (base logits if not cached, staging): {first_s:.2f} s")
        bare = bare_shell(job)
        print(f"bare command: adb {' '.join(bare)}")

        melt_s, bare_s, rows = [], [], []
        for _ in range(args.runs):
            t = time.perf_counter()
            out = adb.run("-s", serial, *bare, timeout=600)
            bare_s.append(time.perf_counter() - t)
            found = FINAL.search(out.stdout + out.stderr)
            if out.returncode != 0 or not found:
                raise SystemExit(f"bare llama-perplexity failed: {(out.stderr or out.stdout).strip()[-500:]}")
            wall, run_id = melt_run(experiment, results)
            melt_s.append(wall)
            j = job_of(results, run_id)
            if j["status"] != "ok":
                raise SystemExit(f"the job failed: {j['reason']}")
            rows.append((float(found.group(1)), j["metrics"]["perplexity"], j["metrics"].get("kld_mean"),
                         j["metrics"].get("wall_s"), j["provenance"].get("cooldown", {}).get("waited_s")))

        print(f"\n{'run':>4} {'bare s':>8} {'melt s':>8} {'ratio':>6} {'job s':>6} {'cool s':>6} "
              f"{'PPL bare':>9} {'PPL melt':>9} {'KLD melt':>9}")
        for i, (b, m, r) in enumerate(zip(bare_s, melt_s, rows), 1):
            print(f"{i:>4} {b:8.2f} {m:8.2f} {m / b:6.2f} {r[3] or 0:6.2f} {r[4] or 0:6.2f} "
                  f"{r[0]:9.4f} {r[1]:9.4f} {r[2] if r[2] is not None else float('nan'):9.6f}")
        same = all(abs(r[0] - r[1]) <= 5e-5 * r[0] for r in rows)
        print(f"perplexity of the bare call equals melt's: {'yes' if same else 'NO'}")
        return 0 if verdict(bare_s, melt_s) and same else 2


if __name__ == "__main__":
    run(main)

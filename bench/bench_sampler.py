"""Benchmark of melt's on-device sampler on the virtual phone, through the real adb server.

Not a test: it prints the figures recorded in docs/benchmarks.md.

    python bench/bench_sampler.py [--rates 10,50,100,200] [--reps 3] [--job-s 3]

For each requested sampling rate it runs a job of about ``--job-s`` seconds
(a shell busy loop on one core, or ``--job llama``: llama-bench on melt's tiny
model from the cached host build) under ``TelemetryExecutor`` several times and
reports the achieved rate (``sample_rate_hz``) and the sampler's own CPU time
over its lifetime (``sampler_cpu_pct``, percent of one core), medians over the
repetitions. The target: >= 50 Hz achieved at <= 2 % of one core.

Then it times the same short job (``true``) through ``PlainExecutor`` and
through ``TelemetryExecutor`` (lean: no idle baseline, no health snapshots;
and as ``melt run`` uses it: 2 s idle baseline, health before and after),
interleaved, and quotes the per-job overhead as a ratio.

Everything it starts (an isolated adb server on a free port, one virtual
phone, temporary folders) is stopped and removed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _common import machine, run  # bench/ is on sys.path when a bench runs

from melt.config.specs import AdbSpec, DeviceSpec, TelemetrySpec
from melt.devices.android import AndroidDevice
from melt.frameworks.base import Invocation
from melt.runner.execute import PlainExecutor
from melt.runner.telemetry_executor import TelemetryExecutor
from melt.virtual.testing import adb_available, adb_server, virtual_phone

REPO = Path(__file__).resolve().parent.parent
TARGET_HZ, TARGET_CPU_PCT = 50.0, 2.0



def burn_script(seconds: float) -> str:
    """A dash loop that keeps one core busy for about ``seconds`` (uptime-bounded, forks nothing)."""
    cs = max(1, round(seconds * 100))
    return ("read u _ < /proc/uptime; end=$(( ${u%.*}${u#*.} + " + str(cs) + " )); "
            "while :; do read u _ < /proc/uptime; [ $(( ${u%.*}${u#*.} )) -ge $end ] && break; "
            "i=0; while [ $i -lt 2000 ]; do i=$((i+1)); done; done")


def device_for(serial: str, port: int, **telemetry) -> AndroidDevice:
    spec = DeviceSpec(name="virtual-phone", kind="android", virtual={},
                      adb=AdbSpec(serial=serial, server_port=port),
                      telemetry=TelemetrySpec(**telemetry))
    return AndroidDevice.connect(spec)


def llama_job(device: AndroidDevice, seconds: float, tmp: Path) -> Invocation:
    """llama-bench on the tiny model, staged to the phone (cached host build only).

    The tiny model runs a pp/tg test in milliseconds: the repetitions are
    calibrated with one plain run so that the job lasts about ``seconds``.
    """
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_build_cache import cached_host_build

    from melt.models.tiny import write_tiny_model

    build = cached_host_build()
    if build is None:
        raise SystemExit("no cached host build of llama.cpp: run `melt build` first, or use --job burn")
    model = write_tiny_model(tmp / "tiny.gguf")
    bench = device.stage(build.binaries["llama-bench"], category="bin/llama.cpp")
    for lib in build.bin_dir.glob("*.so*"):
        device.stage(lib, category="bin/llama.cpp")
    remote_model = device.stage(model, category="models")
    argv = (bench, "-m", remote_model, "-p", "256", "-n", "256", "-t", "1", "-o", "json")
    runs = {}
    for r in (1, 4):  # fixed cost (start, load, warm-up) and cost per repetition
        done = PlainExecutor().execute(device, Invocation((*argv, "-r", str(r)), timeout_s=120))
        if done.returncode != 0:
            raise SystemExit(f"llama-bench failed on the phone: {done.stderr.strip()[-300:]}")
        runs[r] = done.duration_s
    per_rep = max((runs[4] - runs[1]) / 3, 1e-3)
    reps = max(1, 1 + math.ceil((seconds - runs[1]) / per_rep))
    return Invocation((*argv, "-r", str(reps)), timeout_s=seconds * 10 + 60)


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rates", default="10,50,100,200", help="requested sample rates, Hz (comma-separated)")
    ap.add_argument("--reps", type=int, default=3, help="jobs per rate")
    ap.add_argument("--job-s", type=float, default=3.0, help="length of each measured job, s")
    ap.add_argument("--job", choices=("burn", "llama"), default="burn",
                    help="burn: a shell busy loop; llama: llama-bench on the tiny model (cached build)")
    ap.add_argument("--overhead-reps", type=int, default=3, help="short jobs per executor for the overhead")
    args = ap.parse_args()
    if not adb_available():
        print("adb is not installed (apt-get install adb): cannot run this benchmark", file=sys.stderr)
        return 1
    rates = [float(r) for r in args.rates.split(",") if r.strip()]

    print(f"machine: {machine()}")
    started = time.monotonic()
    rows = []
    with contextlib.ExitStack() as stack:
        adb = stack.enter_context(adb_server())
        phone = stack.enter_context(virtual_phone(REPO / "device_configs" / "virtual-phone.yaml"))
        serial = adb.connect(phone.address)
        print(f"virtual phone {serial}, adb {adb.run('version').stdout.splitlines()[0]} on port {adb.port}")
        first = device_for(serial, adb.port)
        if args.job == "llama":
            inv = llama_job(first, args.job_s, Path(stack.enter_context(
                tempfile.TemporaryDirectory(prefix="melt-bench-model-"))))
            print(f"job: {' '.join(inv.argv)}")
        else:
            inv = Invocation(("sh", "-c", burn_script(args.job_s)), timeout_s=args.job_s + 60)
            print(f"job: a dash busy loop of {args.job_s:g} s on one core")

        # -- achieved rate and sampler CPU per requested rate
        described = None
        for hz in rates:
            device = device_for(serial, adb.port, sample_hz=hz, idle_s=0)
            ex = TelemetryExecutor(cooldown=False, health=False)
            achieved, cpu, ticks, job_s = [], [], [], []
            for _ in range(args.reps):
                e = ex.execute(device, inv)
                if e.returncode != 0:
                    print(f"job failed (exit {e.returncode}): {e.stderr[-300:]}", file=sys.stderr)
                    return 1
                achieved.append(e.metrics["sample_rate_hz"])
                cpu.append(e.metrics["sampler_cpu_pct"])  # 0.0 below one clock tick
                ticks.append(e.provenance["telemetry"]["ticks"])
                job_s.append(e.duration_s)
                described = described or e.provenance["telemetry"]
            # pooled over the repetitions: CPU seconds / elapsed seconds (elapsed ~ ticks / rate),
            # finer than one repetition's resolution of one clock tick (10 ms) over its lifetime
            lifetimes = [t / a for t, a in zip(ticks, achieved)]
            pooled = sum(c * s for c, s in zip(cpu, lifetimes)) / sum(lifetimes)
            resolution = 100 * 0.01 / median(lifetimes)
            rows.append((hz, median(achieved), min(achieved), median(cpu), max(cpu), pooled, resolution,
                         median(ticks), median(job_s)))
            print(f"  {hz:g} Hz: achieved {', '.join(f'{a:.1f}' for a in achieved)}; "
                  f"sampler CPU % {', '.join(f'{c:.2f}' for c in cpu)}", flush=True)
        assert described is not None
        chans = described["channels"]
        print(f"sampler: shell {described['shell']}, clock {described['clock']}, "
              f"{len(chans['fast'])} fast channels + RSS every tick, {len(chans['slow'])} slow "
              f"+ /proc/stat every {described['slow_every']} ticks")

        # -- per-job overhead: plain vs telemetry, interleaved
        short = Invocation(("true",), timeout_s=60)
        executors = {
            "plain": (PlainExecutor(), first),
            "telemetry, lean (idle 0 s, no health)": (
                TelemetryExecutor(cooldown=False, health=False), device_for(serial, adb.port, idle_s=0)),
            "telemetry, as melt run (idle 2 s, health)": (
                TelemetryExecutor(cooldown=False, health=True), device_for(serial, adb.port)),
        }
        for ex, dev in executors.values():  # warm: runner staged, channels discovered, clock offset
            ex.execute(dev, short)
        times: dict[str, list[float]] = {k: [] for k in executors}
        for _ in range(args.overhead_reps):
            for name, (ex, dev) in executors.items():
                t = time.perf_counter()
                e = ex.execute(dev, short)
                times[name].append(time.perf_counter() - t)
                if e.returncode != 0:
                    print(f"short job failed via {name}: {e.stderr[-300:]}", file=sys.stderr)
                    return 1

    print()
    print(f"{args.reps} jobs per rate; sampler CPU resolution: one clock tick over the sampler's lifetime")
    print("| requested Hz | achieved Hz (median, min) | sampler % of a core (median, max) | pooled | "
          "resolution | ticks/job | job s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for hz, a, amin, c, cmax, pooled, res, tk, js in rows:
        print(f"| {hz:g} | {a:.1f} ({amin:.1f}) | {c:.2f} ({cmax:.2f}) | {pooled:.2f} | {res:.2f} "
              f"| {tk:.0f} | {js:.2f} |")
    at50 = [r for r in rows if r[0] == TARGET_HZ]
    if at50:
        _, a, amin, c, cmax, pooled, _, _, _ = at50[0]
        holds = amin >= TARGET_HZ * 0.98 and pooled <= TARGET_CPU_PCT
        print(f"target >= {TARGET_HZ:g} Hz at <= {TARGET_CPU_PCT:g}% of one core, at 50 Hz requested: "
              f"{'holds' if holds else 'MISSED'} (achieved min {amin:.1f} Hz; sampler CPU pooled "
              f"{pooled:.2f}%, worst job {cmax:.2f}%)")
    print()
    plain = median(times["plain"])
    print("| executor, short job (`true`) | wall s (median) | vs plain |")
    print("| --- | --- | --- |")
    for name, ts in times.items():
        m = median(ts)
        print(f"| {name} | {m:.3f} | {m / plain:.1f}x (+{m - plain:.3f} s) |")
    print(f"(total {time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    run(main)

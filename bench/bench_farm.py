"""Benchmark of the farm: jobs per second of 2 worker hosts x 4 virtual phones against one phone's.

Not a test: it prints the figures recorded in docs/benchmarks.md.

    python bench/bench_farm.py [--hosts 2] [--phones-per-host 4] [--jobs-per-phone 3] [--idle-s 10]
                               [--interval 5] [--idle-window-s 10]

A real ``redis-server`` on loopback with a password is the broker. Each
"host" is a ``melt farm worker`` process (its supervisor, and one Celery
worker process per device, as in production), serving its share of melt's
virtual phones (each its own process, behind an isolated real adb server).
Jobs go through ``melt run --farm``'s code path (``run_experiment`` with the
farm's pool): one signed Celery message per job, the record and its files
back through the run's Redis list, heartbeats from the supervisors.

The workload is bench_parallel's: llama.cpp ``generate`` of 4 tokens on
melt's tiny model after an idle baseline of ``--idle-s`` seconds sampled at
2 Hz before every job (no baseline reused), on phones whose physical model
steps at 10 Hz, so that the device mostly waits. Two configurations are measured in the same run, each on
workers started for it, after one warm-up job per phone (staging): 1 host x
1 phone, then HOSTS x PHONES. Throughput is jobs / (last job's end - first
job's start) over the stored records; the target is >= 0.9 x (phones) x one
phone's.

Broker cost: Redis ``INFO stats`` and ``INFO commandstats`` before and after
each measured run, per job, with the farm's idle cost (the same workers
online, no jobs, over ``--idle-window-s``) shown beside it. Where the time
goes: the machine's CPU (``/proc/stat``), the CPU of each part (worker hosts,
phones, adb, Redis, this submitting process), the load average, and each
phone's gap between one job's end and its next job's start.

Everything it starts is stopped at the end, on Ctrl-C too.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from statistics import mean
from typing import Any, Iterator

from _common import machine, run  # bench/ is on sys.path when a bench runs

TARGET = 0.9
ROOT = Path(__file__).resolve().parent.parent

EXPERIMENT = """
name: farm-{label}
devices: [{devices}]
models: [{{name: tiny, path: {model}}}]
workloads:
  - {{name: gen, kind: generate, prompt: "Hello", n_predict: 4, threads: 1}}
repetitions: {reps}
warmup: 0
"""

#: INFO stats fields compared before and after a run.
STATS = ("total_commands_processed", "total_net_input_bytes", "total_net_output_bytes")


def phone_yaml(name: str, address: str, adb_port: int, idle_s: float) -> str:
    return (f"name: {name}\nkind: android\nbuild_profile: host\n"
            f"adb: {{connect: '{address}', server_port: {adb_port}}}\n"
            f"virtual: {{}}\ntelemetry: {{idle_s: {idle_s}, idle_reuse: null, sample_hz: 2, slow_every: 1, "
            "clock_probes: 4}\n")


def stamp(s: str) -> float:
    return datetime.fromisoformat(s).timestamp()


# ----------------------------------------------------------------- pure figures

def throughput(jobs: list[dict[str, Any]]) -> tuple[float, float]:
    """(span s, jobs/s): jobs / (last end - first start) over stored records."""
    span = max(stamp(j["finished_at"]) for j in jobs) - min(stamp(j["started_at"]) for j in jobs)
    return span, len(jobs) / span


def job_times(jobs: list[dict[str, Any]]) -> tuple[float, float, float]:
    """(mean job s, mean gap s between a phone's jobs, spread s of the phones' first starts).

    The gap is the farm's time between jobs on one device: the record going
    back, the message acknowledged, the next one taken off the queue.
    """
    by_device: dict[str, list[tuple[float, float]]] = {}
    for j in jobs:
        by_device.setdefault(j["device"], []).append((stamp(j["started_at"]), stamp(j["finished_at"])))
    gaps = [b[0] - a[1] for runs in by_device.values() for a, b in zip(sorted(runs), sorted(runs)[1:])]
    firsts = [min(runs)[0] for runs in by_device.values()]
    duration = mean(e - s for runs in by_device.values() for s, e in runs)
    return duration, (mean(gaps) if gaps else float("nan")), max(firsts) - min(firsts)


def broker_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float]:
    """What Redis did between two ``INFO`` readings: each of :data:`STATS`, each command's calls, CPU s."""
    out = {k: float(after[k]) - float(before[k]) for k in STATS}
    out["cpu_s"] = (float(after["used_cpu_user"]) + float(after["used_cpu_sys"])
                    - float(before["used_cpu_user"]) - float(before["used_cpu_sys"]))
    for key, value in after.items():
        if key.startswith("cmdstat_") and isinstance(value, dict):
            calls = float(value.get("calls", 0)) - float((before.get(key) or {}).get("calls", 0))
            if calls:
                out[key.removeprefix("cmdstat_")] = calls
    return out


def messages(delta: dict[str, float]) -> dict[str, float]:
    """The farm's messages in a broker delta, by what the farm sends with each command.

    ``lpush``: Celery task messages (one per job); ``rpush``: notes on the
    run's list ("started", "staging", the record); ``set``: heartbeats (the
    task's first, then its host's supervisor every few seconds).
    """
    return {"task messages": delta.get("lpush", 0.0), "notes and records": delta.get("rpush", 0.0),
            "heartbeats": delta.get("set", 0.0)}


# ----------------------------------------------------------------- CPU from /proc

def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, utime+stime+cutime+cstime in ticks) of ``pid``, or None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()
    return int(fields[1]), sum(int(x) for x in fields[11:15])


def tree_cpu_s(roots: list[int]) -> float:
    """CPU seconds of ``roots`` and every live descendant (reaped children are in their parents' c-times)."""
    table = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            st = _stat(int(entry.name))
            if st is not None:
                table[int(entry.name)] = st
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    total, todo, seen = 0, list(roots), set()
    while todo:
        pid = todo.pop()
        if pid in seen or pid not in table:
            continue
        seen.add(pid)
        total += table[pid][1]
        todo.extend(children.get(pid, []))
    return total / os.sysconf("SC_CLK_TCK")


def machine_cpu() -> tuple[float, float]:
    """(busy s, total s) over all cores since boot, from /proc/stat (idle and iowait are not busy)."""
    values = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(values) - values[3] - values[4]) / tick, sum(values) / tick


def pids_with(*needles: str) -> list[int]:
    """Processes whose command line holds every one of ``needles``."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                cmd = Path(f"/proc/{entry.name}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                if all(n in cmd for n in needles):
                    found.append(int(entry.name))
    return found


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


# ----------------------------------------------------------------- the farm

@dataclass
class WorkerHost:
    """One ``melt farm worker`` process and the devices it serves."""

    name: str
    devices: list[str]
    proc: subprocess.Popen
    log_dir: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # each device ends its job, its Celery worker stops
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@contextlib.contextmanager
def worker_hosts(url: str, groups: list[list[str]], configs: Path, models: Path, logs: Path,
                 interval: float) -> Iterator[list[WorkerHost]]:
    """One ``melt farm worker`` per group of devices, until every device is online and consuming."""
    from melt.farm.app import BROKER_ENV

    hosts: list[WorkerHost] = []
    try:
        for devices in groups:
            log_dir = logs / f"host-{len(list(logs.glob('host-*')))}"
            log_dir.mkdir(parents=True)
            with open(log_dir / "supervisor.log", "wb") as err:
                # the broker URL in the environment, as a service would have it: never on a command line
                proc = subprocess.Popen(
                    [sys.executable, "-m", "melt.cli.main", "farm", "worker", "--configs", str(configs),
                     *[a for d in devices for a in ("--device", d)], "--interval", str(interval),
                     "--log-dir", str(log_dir), "--models", str(models)],
                    cwd=ROOT, env={**os.environ, BROKER_ENV: url}, stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
            hosts.append(WorkerHost(log_dir.name, devices, proc, log_dir))
        wait_online(url, hosts)
        yield hosts
    finally:
        for host in hosts:
            host.stop()


def wait_online(url: str, hosts: list[WorkerHost], timeout: float = 180) -> None:
    """Until every device is advertised online and its Celery worker said it is ready."""
    from melt.farm.app import redis_client
    from melt.farm.registry import farm_status

    client = redis_client(url)
    devices = [d for h in hosts for d in h.devices]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        online = {e.device for e in farm_status(client) if e.health == "online"}
        ready = [d for h in hosts for d in h.devices if d in online
                 and (h.log_dir / f"{d}.log").is_file() and b"ready" in (h.log_dir / f"{d}.log").read_bytes()]
        if len(ready) == len(devices):
            return
        dead = [h for h in hosts if h.proc.poll() is not None]
        if dead:
            raise RuntimeError(f"{dead[0].name} exited: {(dead[0].log_dir / 'supervisor.log').read_text()[-2000:]}")
        time.sleep(0.3)
    raise RuntimeError(f"devices not online within {timeout:.0f} s: {devices}")


@dataclass
class Measured:
    label: str
    phones: int
    jobs: int
    ok: int
    span_s: float
    wall_s: float
    rate: float
    job_s: float
    gap_s: float
    skew_s: float
    broker: dict[str, float]  # what Redis did during the run (broker_delta)
    idle: dict[str, float]  # what it did per second with the same workers online and no jobs
    cpu: dict[str, float]  # CPU s of each part over the run, and the machine's busy and total s
    load: tuple[float, float]


def measure(label: str, exp: Path, results: Path, url: str, hosts: list[WorkerHost], parts: dict[str, list[int]],
            idle_window_s: float) -> Measured:
    """Idle broker cost, then one farm run of ``exp``: its figures."""
    from melt.farm.app import redis_client
    from melt.farm.submit import FarmPool
    from melt.runner.engine import run_experiment

    client = redis_client(url)
    parts = {"worker hosts": [h.proc.pid for h in hosts], **parts}
    # the farm's own cost with nothing to do: supervisors' probes and adverts, Celery's polling
    before = client.info("everything")
    time.sleep(idle_window_s)
    idle = broker_delta(before, client.info("everything"))
    load0 = loadavg()
    cpu0 = {name: tree_cpu_s(pids) for name, pids in parts.items()}
    self0 = sum(os.times()[:2])
    busy0, total0 = machine_cpu()
    before = client.info("everything")
    t = time.monotonic()
    result = run_experiment(exp, results_dir=results, pool=FarmPool(url))
    wall = time.monotonic() - t
    after = client.info("everything")
    busy1, total1 = machine_cpu()
    cpu = {name: tree_cpu_s(pids) - cpu0[name] for name, pids in parts.items()}
    cpu["submitter"] = sum(os.times()[:2]) - self0
    cpu["machine busy"], cpu["machine total"] = busy1 - busy0, total1 - total0
    jobs = result.jobs()
    span, rate = throughput(jobs)
    job_s, gap_s, skew_s = job_times(jobs)
    delta = broker_delta(before, after)
    return Measured(label, len({j["device"] for j in jobs}), len(jobs), sum(j["status"] == "ok" for j in jobs),
                    span, wall, rate, job_s, gap_s, skew_s, delta,
                    {k: v / idle_window_s for k, v in idle.items()}, cpu, (load0, loadavg()))


# ----------------------------------------------------------------- printing

def print_tables(rows: list[Measured], base: float) -> None:
    print("\n| farm | phones | jobs | ok | span s | run wall s | jobs/s | x one phone | / N | job s | gap s "
          "| first-start spread s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r.label} | {r.phones} | {r.jobs} | {r.ok} | {r.span_s:.1f} | {r.wall_s:.1f} | {r.rate:.3f} | "
              f"{r.rate / base:.2f} | {r.rate / (base * r.phones):.2f} | {r.job_s:.1f} | {r.gap_s:.2f} | "
              f"{r.skew_s:.1f} |")
    print("\nBroker cost per job over the run (Redis INFO; commands run by scripts included), and the idle farm's "
          "per second (its workers online, no jobs):")
    print("\n| farm | commands | bytes in | bytes out | Redis CPU ms | task messages | notes and records | heartbeats "
          "| idle: commands/s | idle: bytes in/s | idle: bytes out/s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        b, n, m = r.broker, r.jobs, messages(r.broker)
        print(f"| {r.label} | {b['total_commands_processed'] / n:,.0f} | {b['total_net_input_bytes'] / n:,.0f} | "
              f"{b['total_net_output_bytes'] / n:,.0f} | {b['cpu_s'] / n * 1000:.1f} | "
              + " | ".join(f"{v / n:.2f}" for v in m.values())
              + f" | {r.idle['total_commands_processed']:.1f} | {r.idle['total_net_input_bytes']:,.0f} | "
              f"{r.idle['total_net_output_bytes']:,.0f} |")
    commands = sorted({k for r in rows for k in r.broker if k not in STATS and k != "cpu_s"},
                      key=lambda k: -max(r.broker.get(k, 0.0) / r.jobs for r in rows))
    print("\nRedis commands per job in each run, and per second of the idle farm:")
    print("\n| command | " + " | ".join(f"{r.label} per job | {r.label} idle/s" for r in rows) + " |")
    print("| --- | " + " | ".join("--- | ---" for _ in rows) + " |")
    for k in commands:
        print(f"| {k} | " + " | ".join(f"{r.broker.get(k, 0.0) / r.jobs:.2f} | {r.idle.get(k, 0.0):.2f}"
                                       for r in rows) + " |")
    names = [k for k in rows[0].cpu if not k.startswith("machine")]
    print(f"\nCPU over each run, in cores busy on average (CPU s / run wall s; the machine has {os.cpu_count()}):")
    print("\n| farm | load avg start-end | machine busy | " + " | ".join(names) + " | rest of machine |")
    print("| --- | --- | --- | " + " | ".join("---" for _ in names) + " | --- |")
    for r in rows:
        wall = r.wall_s
        ours = sum(r.cpu[k] for k in names)
        print(f"| {r.label} | {r.load[0]:.1f}-{r.load[1]:.1f} | "
              f"{r.cpu['machine busy'] / wall:.2f} of {r.cpu['machine total'] / wall:.0f} | "
              + " | ".join(f"{r.cpu[k] / wall:.2f}" for k in names)
              + f" | {(r.cpu['machine busy'] - ours) / wall:.2f} |")


# ----------------------------------------------------------------- main

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=2)
    ap.add_argument("--phones-per-host", type=int, default=4)
    ap.add_argument("--jobs-per-phone", type=int, default=3)
    ap.add_argument("--idle-s", type=float, default=10.0, help="each job's idle baseline (s)")
    ap.add_argument("--interval", type=float, default=5.0, help="the supervisors' probe interval (s)")
    ap.add_argument("--idle-window-s", type=float, default=10.0,
                    help="how long the farm's idle broker cost is read before each run (s)")
    args = ap.parse_args()
    from melt.farm.testing import redis_available, redis_server
    from melt.virtual.testing import adb_available

    if not adb_available() or not redis_available():
        print("needs adb and redis-server (Debian: apt-get install adb redis-server)", file=sys.stderr)
        return 1
    from melt.devices.abi import host_abi
    from melt.frameworks.llamacpp.build import host_build
    from melt.models.tiny import write_tiny_model
    from melt.runner.engine import run_experiment
    from melt.farm.submit import FarmPool
    from melt.virtual.config import RatesParams, VirtualPhoneConfig
    from melt.virtual.testing import adb_server, virtual_phone

    print(machine())
    host_build()  # the workers build nothing during the runs: the cached host build
    os.environ["MELT_FARM_KEY"] = secrets.token_hex(32)  # this farm's key, for the workers and the submitter
    os.environ.pop("MELT_FARM_KEY_FILE", None)
    n = args.hosts * args.phones_per_host
    rows: list[Measured] = []
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="melt-bench-farm-")))
        url = stack.enter_context(redis_server(password=secrets.token_hex(24)))
        adb = stack.enter_context(adb_server())
        configs, models, logs = tmp / "device_configs", tmp / "models", tmp / "logs"
        for d in (configs, models, logs):
            d.mkdir()
        model = write_tiny_model(tmp / "tiny.gguf", seed=1)
        shutil.copy(model, models / "tiny.gguf")  # the workers find it by its sha256
        # the phones' physical model at low rates, as in bench_parallel: cores are not to be the limit
        config = VirtualPhoneConfig(abi=host_abi(), rates=RatesParams(tick_hz=10, cpu_sample_hz=5, sysfs_hz=2))
        names = [f"p{i}" for i in range(n)]
        phone_pids = []
        for name in names:
            phone = stack.enter_context(virtual_phone(config, state_dir=tmp / f"state-{name}"))
            adb.connect(phone.address)
            (configs / f"{name}.yaml").write_text(phone_yaml(name, phone.address, adb.port, args.idle_s))
            phone_pids.append(phone.process.pid)
        from melt.farm.app import redis_client

        parts = {"phones": phone_pids, "adb server": pids_with("fork-server", f"tcp:{adb.port}"),
                 "redis": [int(redis_client(url).info("server")["process_id"])]}

        def experiment(label: str, devices: list[str], reps: int) -> Path:
            path = tmp / f"{label}.yaml"
            path.write_text(EXPERIMENT.format(label=label, devices=", ".join(devices), model=model, reps=reps))
            return path

        layouts = [("1x1", [names[:1]]),
                   (f"{args.hosts}x{args.phones_per_host}",
                    [names[i * args.phones_per_host:(i + 1) * args.phones_per_host] for i in range(args.hosts)])]
        for label, groups in layouts:
            devices = [d for g in groups for d in g]
            print(f"{label}: starting {len(groups)} worker host(s) for {len(devices)} phone(s)", flush=True)
            with worker_hosts(url, groups, configs, models, logs, args.interval) as hosts:
                # one job per phone first: binaries and the model staged, so the run measures jobs only
                warm = run_experiment(experiment(f"warm-{label}", devices, 1), results_dir=tmp / "results",
                                      pool=FarmPool(url)).jobs()
                failed = [j for j in warm if j["status"] != "ok"]
                if failed:
                    print(f"{label}: warm-up failed on {failed[0]['device']}: {failed[0].get('reason')}",
                          file=sys.stderr)
                    return 1
                r = measure(label, experiment(label, devices, args.jobs_per_phone), tmp / "results", url, hosts,
                            parts, args.idle_window_s)
            rows.append(r)
            base = rows[0].rate
            print(f"{label}: {r.jobs} jobs ({r.ok} ok) in {r.span_s:.1f} s -> {r.rate:.3f} jobs/s, "
                  f"{r.rate / base:.2f}x one phone ({r.rate / (base * r.phones):.2f} of {r.phones}x)", flush=True)
    print_tables(rows, rows[0].rate)
    last = rows[-1]
    eff = last.rate / (rows[0].rate * last.phones)
    print(f"\ntarget >= {TARGET} x {last.phones} x one phone: " + ("holds" if eff >= TARGET else f"missed ({eff:.2f})"))
    return 0 if eff >= TARGET and all(r.ok == r.jobs for r in rows) else 1


if __name__ == "__main__":
    run(main)

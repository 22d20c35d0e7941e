"""Benchmark of melt's pushes to the virtual phone through the real adb server.

Not a test: it prints the figures recorded in docs/benchmarks.md.

    python bench/bench_transfer.py [--mb 1024] [--reps 2] [--small-reps 10]

Per repetition, interleaved so that both see the same machine load:

- ``adb -P PORT -s SERIAL push`` of a random ``--mb`` MB file (the CLI, as a
  baseline);
- melt's first ``AndroidDevice.stage()`` of the same file (manifest lookup,
  sync push hashing the bytes as they go, size check, manifest update), with
  an empty sha256 memo so the hash is paid as on a first run; the remote copy
  and its manifest entry are removed first, so every repetition is a first push;
- a second ``stage()`` of the same file: content-addressed, so 0 bytes are
  sent and only the time counts.

Targets: a first stage at >= 0.9x the throughput of ``adb push``, and an
unchanged re-push that sends 0 bytes in < 0.5 s.

Also the latency of pushing a 1 KB file (melt's runner pushes a small
``job.sh`` for every job): ``AdbTransport.push`` vs the CLI.

An isolated adb server on a free loopback port, one virtual phone and the
temporary files are all removed at the end; melt's sha256 memo is kept in a
temporary cache folder, not in ``~/.cache/melt``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _common import machine, run  # bench/ is on sys.path when a bench runs

from melt.config.specs import AdbSpec, DeviceSpec
from melt.devices.android import MANIFEST, AndroidDevice
from melt.hashing import file_sha256
from melt.virtual.testing import adb_available, adb_server, virtual_phone

REMOTE_CLI = "/data/local/tmp/melt-bench-cli"



def write_random(path: Path, size: int) -> None:
    chunk = 1 << 20
    with open(path, "wb") as f:
        left = size
        while left > 0:
            f.write(os.urandom(min(chunk, left)))
            left -= chunk


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=1024, help="size of the big file, MB (2^20 bytes)")
    ap.add_argument("--reps", type=int, default=2, help="repetitions of the big-file pushes")
    ap.add_argument("--small-reps", type=int, default=10, help="repetitions of the 1 KB push")
    args = ap.parse_args()
    if not adb_available():
        print("adb is not installed (apt-get install adb): cannot run this benchmark", file=sys.stderr)
        return 1

    print(f"machine: {machine()}")
    tmp = Path(tempfile.mkdtemp(prefix="melt-bench-transfer-"))
    os.environ["MELT_CACHE_DIR"] = str(tmp / "cache")  # melt's sha256 memo goes here
    started = time.monotonic()
    try:
        big = tmp / "model.bin"
        size = args.mb << 20
        write_random(big, size)
        small = tmp / "job.sh"
        small.write_bytes(os.urandom(1024))
        t = time.perf_counter()
        file_sha256(big)
        hash_s = time.perf_counter() - t

        cli, first, second, second_bytes = [], [], [], []
        small_melt, small_cli = [], []
        with adb_server() as adb, virtual_phone() as phone:
            serial = adb.connect(phone.address)
            print(f"virtual phone {serial}, {adb.run('version').stdout.splitlines()[0]} on port {adb.port}")
            spec = DeviceSpec(name="virtual-phone", kind="android", virtual={},
                              adb=AdbSpec(serial=serial, server_port=adb.port))
            device = AndroidDevice.connect(spec)
            tr = device.transport
            remote = f"{device.workdir()}/models/{big.name}"
            q = shlex.quote
            tr.shell(f"mkdir -p {REMOTE_CLI}")

            def adb_push(local: Path, dest: str) -> float:
                t = time.perf_counter()
                done = adb.run("-s", serial, "push", str(local), dest, timeout=300)
                seconds = time.perf_counter() - t
                if done.returncode != 0:
                    raise SystemExit(f"adb push failed: {done.stderr.strip() or done.stdout.strip()}")
                return seconds

            for _ in range(args.reps):
                cli.append(adb_push(big, f"{REMOTE_CLI}/{big.name}"))
                tr.shell(f"rm -f {REMOTE_CLI}/{big.name}")

                # a first push: nothing on the device, no sha256 memo
                tr.shell(f"rm -f {q(remote)} {q(device.workdir() + '/' + MANIFEST)}")
                (tmp / "cache" / "sha256.json").unlink(missing_ok=True)
                before = device.bytes_pushed
                t = time.perf_counter()
                device.stage(big, category="models")
                first.append(time.perf_counter() - t)
                if device.bytes_pushed - before != size:
                    raise SystemExit(f"first stage sent {device.bytes_pushed - before} bytes, not {size}")

                before = device.bytes_pushed
                t = time.perf_counter()
                device.stage(big, category="models")
                second.append(time.perf_counter() - t)
                second_bytes.append(device.bytes_pushed - before)

            same = tr.shell(f"sha256sum {q(remote)}").stdout.split()[0] == file_sha256(big)
            for i in range(args.small_reps):
                small_cli.append(adb_push(small, f"{REMOTE_CLI}/job.sh"))
                t = time.perf_counter()
                tr.push(small, f"{device.workdir()}/jobs/bench/job.sh")
                small_melt.append(time.perf_counter() - t)
            tr.shell(f"rm -rf {REMOTE_CLI} {q(device.workdir())}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    mb = size / (1 << 20)
    print()
    print(f"{args.mb} MB file, {args.reps} repetitions, medians (min-max); device copy identical: {same}")
    print("| push | time s | MB/s | vs adb push |")
    print("| --- | --- | --- | --- |")
    base = median(cli)
    print(f"| `adb push` (CLI) | {base:.2f} ({min(cli):.2f}-{max(cli):.2f}) | {mb / base:.0f} | 1.00x |")
    f = median(first)
    print(f"| melt `stage()`, first push (incl. sha256) | {f:.2f} ({min(first):.2f}-{max(first):.2f}) "
          f"| {mb / f:.0f} | {f / base:.2f}x time |")
    s = median(second)
    print(f"| melt `stage()`, second time ({max(second_bytes)} bytes sent) | {s:.3f} "
          f"({min(second):.3f}-{max(second):.3f}) | - | {s / base:.3f}x time ({s / f:.3f}x of the first) |")
    print(f"(sha256 of the file alone, first read: {hash_s:.2f} s = {mb / hash_s:.0f} MB/s)")
    print()
    print(f"1 KB push, {args.small_reps} repetitions, median (min-max)")
    print("| push | ms |")
    print("| --- | --- |")
    print(f"| `adb push` (CLI, includes starting the client) | {1000 * median(small_cli):.0f} "
          f"({1000 * min(small_cli):.0f}-{1000 * max(small_cli):.0f}) |")
    print(f"| melt `AdbTransport.push` (sync push, stat) | {1000 * median(small_melt):.0f} "
          f"({1000 * min(small_melt):.0f}-{1000 * max(small_melt):.0f}) |")
    print(f"(total {time.monotonic() - started:.0f} s)")
    ratio = base / f
    ok_first, ok_second = ratio >= 0.9, s < 0.5 and max(second_bytes) == 0
    print(f"target: first stage >= 0.9x adb push throughput: {'holds' if ok_first else 'MISSED'} ({ratio:.2f}x)")
    print(f"target: unchanged re-push sends 0 bytes in < 0.5 s: {'holds' if ok_second else 'MISSED'} "
          f"({max(second_bytes)} bytes, {s:.3f} s)")
    return 0 if ok_first and ok_second else 2


if __name__ == "__main__":
    run(main)

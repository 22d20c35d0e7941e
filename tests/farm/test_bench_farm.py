"""The farm benchmark's figures: throughput and gaps from records, Redis deltas, CPU of process trees."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest

from tests.helpers import ROOT

sys.path.insert(0, str(ROOT / "bench"))
import bench_farm  # noqa: E402

T0 = datetime(2026, 12, 1, 12, 0, 0, tzinfo=timezone.utc)


def job(device: str, start_s: float, end_s: float) -> dict:
    return {"device": device, "started_at": (T0 + timedelta(seconds=start_s)).isoformat(),
            "finished_at": (T0 + timedelta(seconds=end_s)).isoformat()}


def test_throughput_is_jobs_over_first_start_to_last_end():
    jobs = [job("p0", 0, 9), job("p0", 10, 19), job("p1", 2, 30)]
    span, rate = bench_farm.throughput(jobs)
    assert span == pytest.approx(30.0)
    assert rate == pytest.approx(3 / 30)


def test_job_times_gap_is_per_device_and_spread_is_of_first_starts():
    jobs = [job("p0", 0, 9), job("p0", 9.5, 19), job("p1", 3, 12), job("p1", 14, 20)]
    duration, gap, spread = bench_farm.job_times(jobs)
    assert duration == pytest.approx((9 + 9.5 + 9 + 6) / 4)
    assert gap == pytest.approx((0.5 + 2.0) / 2)  # never the gap between two devices' jobs
    assert spread == pytest.approx(3.0)


def test_broker_delta_counts_commands_first_seen_after_and_cpu():
    before = {"total_commands_processed": 100, "total_net_input_bytes": 1000, "total_net_output_bytes": 500,
              "used_cpu_user": 1.0, "used_cpu_sys": 0.5, "cmdstat_lpush": {"calls": 4}}
    after = {"total_commands_processed": 160, "total_net_input_bytes": 4000, "total_net_output_bytes": 900,
             "used_cpu_user": 1.25, "used_cpu_sys": 0.75, "cmdstat_lpush": {"calls": 7},
             "cmdstat_rpush": {"calls": 9}, "cmdstat_get": {"calls": 0}}
    delta = bench_farm.broker_delta(before, after)
    assert delta["total_commands_processed"] == 60
    assert delta["total_net_input_bytes"] == 3000 and delta["total_net_output_bytes"] == 400
    assert delta["cpu_s"] == pytest.approx(0.5)
    assert delta["lpush"] == 3 and delta["rpush"] == 9 and "get" not in delta
    assert bench_farm.messages(delta) == {"task messages": 3, "notes and records": 9, "heartbeats": 0}


def test_tree_cpu_counts_a_reaped_child():
    before = bench_farm.tree_cpu_s([os.getpid()])
    subprocess.run([sys.executable, "-c", "import time\nt = time.process_time()\n"
                    "while time.process_time() - t < 0.4: pass"], check=True)
    assert bench_farm.tree_cpu_s([os.getpid()]) - before >= 0.35
    assert bench_farm.tree_cpu_s([2 ** 22 + 12345]) == 0.0  # no such process: nothing, not an error

"""``melt farm worker``: one Celery worker process per attached device.

For each device the supervisor probes the device every ``interval_s``
(connect, ``device.health()``) and advertises the result in Redis
(:mod:`melt.farm.registry`). While the device answers, its worker process
(:mod:`melt.farm.device_process`) runs and consumes ``device.<name>``; when
the device stops answering, the worker is stopped (warm shutdown: the job in
flight finishes or fails, nothing more is taken, queued jobs wait in the
queue); when it answers again, a new worker starts. A worker process that
exits on its own is started again.

A thread of its own keeps the heartbeat of each running job fresh
(:mod:`melt.farm.heartbeat`): every ``BEAT_INTERVAL_S``, for each device
whose Celery worker process is alive and runs a job (the ``running`` entry
its task wrote, naming this host and that process). When this host dies,
the heartbeats stop and the submitter records the jobs as lost.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from melt.farm.app import BROKER_ENV, redis_client
from melt.farm.policy import ALLOWED_SOURCES_ENV, MODELS_DIR_ENV
from melt.farm.heartbeat import BEAT_INTERVAL_S, beat
from melt.farm.registry import RUNNING_KEY, advertise, withdraw
from melt.farm.signing import FarmKeys, load_keys
from melt.farm.task import JOB_ID, RUN_ID

#: The largest ``running`` entry the heartbeat thread reads (bytes).
MAX_RUNNING_BYTES = 4096


@dataclass
class DeviceSlot:
    """One attached device and its worker process."""

    name: str
    config: Path
    spec: Any  # DeviceSpec
    proc: subprocess.Popen | None = None
    stopping: subprocess.Popen | None = None  # a worker process ending its job in a warm shutdown
    health: str = "starting"
    detail: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    starts: int = 0


def probe(spec: Any) -> tuple[bool, str, dict[str, Any]]:
    """Is the device there? (answers, a detail line, battery/temperature when known)."""
    from melt.devices.registry import open_device
    from melt.errors import MeltError

    try:
        device = open_device(spec)
    except MeltError as exc:
        return False, str(exc), {}
    try:
        result = device.transport.run(["echo", "melt-ok"], timeout=20, check=False)
        if "melt-ok" not in result.stdout:
            return False, f"shell did not answer (exit {result.returncode})", {}
        health: dict[str, Any] = {}
        if callable(getattr(device, "health", None)):
            with contextlib.suppress(MeltError):
                health = device.health()
        return True, "answers", {k: health[k] for k in ("battery_pct", "temp_c") if k in health}
    except MeltError as exc:
        return False, str(exc), {}
    finally:
        with contextlib.suppress(Exception):
            device.close()


class Supervisor:
    """Keeps one worker process per healthy device (see module doc)."""

    def __init__(self, url: str, slots: list[DeviceSlot], *, interval_s: float = 5.0,
                 visibility_timeout_s: float, log: Callable[[str], None] = print,
                 log_dir: Path | None = None, allowed_sources: tuple[str, ...] = (),
                 models_dir: Path | None = None):
        self.url = url
        self.allowed_sources = allowed_sources
        self.models_dir = models_dir
        self.slots = slots
        self.interval_s = interval_s
        self.visibility_timeout_s = visibility_timeout_s
        self.log = log
        self.log_dir = log_dir
        self.host = socket.gethostname()
        self.stop = threading.Event()
        self.beats_stop = threading.Event()  # set last: jobs ending in a warm shutdown keep beating
        self.client = redis_client(url)

    # ----------------------------------------------------------------- processes

    def _start(self, slot: DeviceSlot) -> None:
        env = {**os.environ, BROKER_ENV: self.url, "PYTHONUNBUFFERED": "1",
               ALLOWED_SOURCES_ENV: "\n".join(self.allowed_sources)}
        if self.models_dir is not None:
            env[MODELS_DIR_ENV] = str(self.models_dir)
        out: Any = subprocess.DEVNULL
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            out = open(self.log_dir / f"{slot.name}.log", "ab")
        try:
            slot.proc = subprocess.Popen(
                [sys.executable, "-m", "melt.farm.device_process", str(slot.config),
                 str(self.visibility_timeout_s)],
                env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        finally:
            if out is not subprocess.DEVNULL:
                out.close()
        slot.starts += 1
        self.log(f"{slot.name}: worker process {slot.proc.pid} consumes device.{slot.name}")

    def _stop_proc(self, slot: DeviceSlot, *, grace_s: float = 60.0) -> None:
        proc, slot.proc = slot.proc, None
        if proc is None or proc.poll() is not None:
            return
        slot.stopping = proc
        proc.send_signal(signal.SIGTERM)  # warm shutdown: no new job, the one in flight ends
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        finally:
            slot.stopping = None

    # ----------------------------------------------------------------- the loop

    def _advertise(self, slot: DeviceSlot) -> None:
        info = {"health": slot.health, "detail": slot.detail, "pid": os.getpid(),
                "worker_pid": slot.proc.pid if slot.proc else None, "interval_s": self.interval_s,
                "visibility_timeout_s": self.visibility_timeout_s,
                "consuming": slot.proc is not None and slot.proc.poll() is None, **slot.info}
        with contextlib.suppress(Exception):  # the broker may be restarting: try again next round
            advertise(self.client, slot.name, self.host, info)

    def _watch(self, slot: DeviceSlot) -> None:
        next_probe = 0.0
        while not self.stop.is_set():
            if slot.proc is not None and slot.proc.poll() is not None:
                self.log(f"{slot.name}: worker process {slot.proc.pid} exited ({slot.proc.returncode}); "
                         "starting another")
                slot.proc = None
                next_probe = 0.0
            if time.monotonic() >= next_probe:
                ok, detail, info = probe(slot.spec)
                was = slot.health
                slot.health, slot.detail, slot.info = ("online" if ok else "offline"), detail, info
                if ok and slot.proc is None:
                    self._start(slot)
                elif not ok and slot.proc is not None:
                    self.log(f"{slot.name}: device does not answer ({detail}); it stops taking jobs")
                    self._stop_proc(slot)
                elif not ok and was != "offline":
                    self.log(f"{slot.name}: device does not answer ({detail}); waiting for it")
                self._advertise(slot)
                next_probe = time.monotonic() + self.interval_s
            self.stop.wait(0.2)

    # ----------------------------------------------------------------- heartbeats

    def running_job(self, slot: DeviceSlot) -> tuple[str, str] | None:
        """(run id, job id) of the job ``slot``'s live worker process runs now, else ``None``.

        The entry is read from the broker, so it is bounded and parsed
        strictly: it must name this host and this slot's worker process.
        """
        proc = slot.proc or slot.stopping
        if proc is None or proc.poll() is not None:
            return None
        if int(self.client.hstrlen(RUNNING_KEY, slot.name) or 0) > MAX_RUNNING_BYTES:
            return None
        raw = self.client.hget(RUNNING_KEY, slot.name)
        try:
            entry = json.loads(raw) if raw else None
        except ValueError:
            return None
        if not isinstance(entry, dict) or entry.get("host") != self.host or entry.get("worker_pid") != proc.pid:
            return None
        run_id, job_id = entry.get("run_id"), entry.get("job_id")
        if not (isinstance(run_id, str) and RUN_ID.match(run_id) and isinstance(job_id, str)
                and JOB_ID.match(job_id)):
            return None
        return run_id, job_id

    def _beat_once(self, keys: FarmKeys) -> None:
        for slot in self.slots:
            running = self.running_job(slot)
            if running is not None:
                beat(self.client, keys, *running, slot.name, host=self.host)

    def _beat_loop(self) -> None:
        keys: FarmKeys | None = None
        while not self.beats_stop.is_set():
            with contextlib.suppress(Exception):  # a key file being rotated: the last good keys sign
                keys = load_keys(self.url)
            if keys is not None:
                with contextlib.suppress(Exception):  # the broker may be restarting: try again next beat
                    self._beat_once(keys)
            self.beats_stop.wait(BEAT_INTERVAL_S)

    def run(self) -> None:
        """Supervise until :attr:`stop` is set (or SIGTERM/SIGINT); then stop every worker."""
        threads = [threading.Thread(target=self._watch, args=(s,), name=f"farm-{s.name}", daemon=True)
                   for s in self.slots]
        beats = threading.Thread(target=self._beat_loop, name="farm-heartbeats", daemon=True)
        for t in [*threads, beats]:
            t.start()
        try:
            while not self.stop.is_set():
                self.stop.wait(0.5)
        finally:
            self.stop.set()
            for t in threads:
                t.join(timeout=30)
            for slot in self.slots:
                self._stop_proc(slot)
                with contextlib.suppress(Exception):
                    withdraw(self.client, slot.name, self.host)
            self.beats_stop.set()
            beats.join(timeout=30)

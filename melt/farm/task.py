"""The farm's one task: run a job on this worker's device, send its record back.

The body is :meth:`melt.runner.device_worker.DeviceWorker.execute`, the
function a local run calls. Around it:

- the job is found by its id in the experiment the message carries (the
  same expansion, the same ids), and its model is resolved on this host and
  checked against the sha256 the submitter hashed;
- a delivery counter per task: the first redelivery (the worker process died
  mid-job) runs the job again, a second one gives up with a failed record;
- a job already finished for this run (a stale duplicate message) is skipped;
- the record and its files (zlib, base64) go to the run's Redis list
  ``melt:farm:run:<run_id>``, with "started" and "staging" notes, where the
  submitter (or a later ``melt run --resume``) reads them.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import time
import zlib
from pathlib import Path
from typing import Any

from melt.farm.app import TASK_NAME, env_url, redis_client
from melt.farm.registry import RUNNING_KEY, done_key, events_key

#: How long a run's notes and records wait in Redis for their submitter (s).
EVENTS_TTL_S = 7 * 24 * 3600
#: Deliveries of one task before it is given up (the first plus one redelivery).
MAX_DELIVERIES = 2

_current: dict[str, Any] = {}  # this process's DeviceWorker, for the run it serves


def pack_files(files: dict[str, bytes]) -> dict[str, str]:
    """Files of a record -> ``{name: base64(zlib(data))}``."""
    return {name: base64.b64encode(zlib.compress(data, 6)).decode("ascii") for name, data in files.items()}


def unpack_files(packed: dict[str, str]) -> dict[str, bytes]:
    """The inverse of :func:`pack_files`."""
    return {name: zlib.decompress(base64.b64decode(data)) for name, data in packed.items()}


class _Notes:
    """DeviceWorker events, pushed to the run's list for the submitter's display."""

    def __init__(self, client: Any, run_id: str, device: str):
        self.client, self.key, self.device = client, events_key(run_id), device

    def push(self, note: dict[str, Any]) -> None:
        pipe = self.client.pipeline()
        pipe.rpush(self.key, json.dumps(note, default=str))
        pipe.expire(self.key, EVENTS_TTL_S)
        pipe.execute()

    def stage(self, message: str) -> None:
        self.push({"kind": "stage", "device": self.device, "message": message})

    def job_started(self, job: Any, warmup: bool) -> None:
        self.push({"kind": "started", "job_id": job.job_id, "warmup": warmup})


def _worker_for(payload: dict[str, Any], spec: Any, notes: _Notes) -> Any:
    """This process's DeviceWorker for ``payload``'s run (a new run closes the old one)."""
    from melt.config.loader import validate
    from melt.config.specs import ExperimentSpec
    from melt.runner.device_worker import DeviceWorker

    key = payload["run_id"]
    if _current.get("key") != key or _current["worker"].broken:
        close_current()
        experiment = validate(ExperimentSpec, payload["experiment"], f"run {payload['run_id']}")
        worker = DeviceWorker(spec, experiment, {}, Path(payload["base_dir"]), events=notes,
                              on_staging=lambda info: notes.push({"kind": "staging", "info": info}))
        _current.update(key=key, worker=worker)
    worker = _current["worker"]
    worker.events = notes
    return worker


def close_current() -> None:
    """Restore and release the device of this process's worker, if any."""
    worker = _current.pop("worker", None)
    _current.pop("key", None)
    if worker is not None:
        worker.close()


def execute_payload(payload: dict[str, Any], *, task_id: str, spec: Any, client: Any) -> str:
    """Run one job message on this device; returns what happened (for the worker log)."""
    from melt.runner.matrix import expand

    run_id, job_id = payload["run_id"], payload["job_id"]
    if client.sismember(done_key(run_id), job_id):
        return "skipped: already finished for this run"
    attempts_key = f"melt:farm:deliveries:{task_id}"
    deliveries = client.incr(attempts_key)
    client.expire(attempts_key, EVENTS_TTL_S)
    notes = _Notes(client, run_id, spec.name)
    worker = _worker_for(payload, spec, notes)
    jobs = {j.job_id: j for j in expand(worker.experiment, payload["model_hashes"])}
    job = jobs.get(job_id)
    if job is None:  # a submitter of another melt version expands differently
        notes.push({"kind": "rejected", "job_id": job_id,
                    "reason": f"worker on {socket.gethostname()} finds no job {job_id} in the experiment "
                              f"(melt {payload.get('melt_version')} submitted it; this worker runs another)"})
        client.sadd(done_key(run_id), job_id)
        return "rejected: unknown job id"
    client.hset(RUNNING_KEY, spec.name, json.dumps({
        "run_id": run_id, "job_id": job_id, "pid": os.getpid(), "host": socket.gethostname(),
        "since": time.time(), "delivery": deliveries}))
    try:
        if deliveries > MAX_DELIVERIES:
            record = worker.failed_record(job, f"the worker running this job died {deliveries - 1} times; "
                                               "it is not delivered again")
        else:
            record = _run(worker, job, payload)
    finally:
        client.hdel(RUNNING_KEY, spec.name)
    files = record.pop("_files", {}) or {}
    record.setdefault("provenance", {})["farm"] = {"host": socket.gethostname(), "queue": f"device.{spec.name}",
                                                   "delivery": deliveries, "task_id": task_id}
    pipe = client.pipeline()
    pipe.rpush(events_key(run_id), json.dumps(
        {"kind": "record", "job_id": job_id, "record": record, "files": pack_files(files)}, default=str))
    pipe.expire(events_key(run_id), EVENTS_TTL_S)
    pipe.sadd(done_key(run_id), job_id)
    pipe.expire(done_key(run_id), EVENTS_TTL_S)
    pipe.delete(attempts_key)
    pipe.execute()
    return f"{record['status']}: {job.workload} #{job.repetition}"


def _run(worker: Any, job: Any, payload: dict[str, Any]) -> dict[str, Any]:
    """Resolve ``job``'s model on this host (checked by sha256), then execute it."""
    from melt.errors import MeltError
    from melt.runner.models import resolve_model

    name = job.model.name
    if name not in worker.models:
        index = next(i for i, m in enumerate(worker.experiment.models) if m.name == name)
        try:
            model = resolve_model(job.model, base=worker.base_dir, source=f"run {payload['run_id']}",
                                  index=index)
        except MeltError as exc:
            return worker.failed_record(job, f"model {name} on this worker: {exc}")
        if model.sha256 != job.model_sha256:
            return worker.failed_record(job, f"model {name} on this worker has sha256 {model.sha256[:12]}…, "
                                             f"the run's has {job.model_sha256[:12]}…")
        worker.models[name] = model
    return worker.execute(job)


def serve_device(spec: Any) -> None:
    """Set the device this worker process (and its pool children) runs jobs on."""
    _current["spec"] = spec


def register(app: Any) -> None:
    """Register the task on ``app`` (the device is set with :func:`serve_device`)."""

    @app.task(name=TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
    def execute_job(self: Any, payload: dict[str, Any]) -> str:
        if "client" not in _current:
            _current["client"] = redis_client(env_url())
        client = _current["client"]
        try:
            return execute_payload(payload, task_id=self.request.id, spec=_current["spec"], client=client)
        except Exception as exc:  # a bug must not leave the submitter waiting: the job fails with it
            run_id, job_id = payload.get("run_id", "?"), payload.get("job_id", "?")
            _Notes(client, run_id, "?").push({"kind": "rejected", "job_id": job_id,
                                              "reason": f"worker error on {socket.gethostname()}: "
                                                        f"{type(exc).__name__}: {exc}"})
            client.sadd(done_key(run_id), job_id)
            raise

"""The farm's one task: run a job on this worker's device, send its record back.

The body is :meth:`melt.runner.device_worker.DeviceWorker.execute`, the
function a local run calls. Around it:

- the message is verified first (:mod:`melt.farm.signing`: signed with the
  farm key, not expired) and refused if this host already ran it
  (:mod:`melt.farm.replay`); a message that does not verify is logged and
  dropped, and nothing of it is used;
- the worker's own policy (:mod:`melt.farm.policy`) decides what it builds:
  the pinned source or the sources its operator allows, never ``binaries:``,
  models found by sha256 in its own models folder; a job it refuses comes
  back as a failed record with the reason, and nothing is built or run;
- the job is found by its id in the experiment the message carries (the
  same expansion, the same ids), and its model is checked against the
  sha256 the submitter hashed;
- a delivery counter per message: the first redelivery (the worker process
  died mid-job) runs the job again, a second one gives up with a failed record;
- a job already finished for this run (a stale duplicate message) is skipped;
- while the job runs its heartbeat is kept fresh (:mod:`melt.farm.heartbeat`):
  written here when the job is taken, then by this host's supervisor;
- the record and its files (zlib, base64) go to the run's Redis list
  ``melt:farm:run:<run_id>`` in signed notes, with "started" and "staging"
  notes, where the submitter (or a later ``melt run --resume``) reads them.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import socket
import time
import zlib
from pathlib import Path
from typing import Any

from melt.errors import MeltError, OutputTooLargeError
from melt.farm.app import BROKER_ENV, TASK_NAME, FarmError, env_url, mask_secrets, redis_client
from melt.farm.heartbeat import alive_key, beat
from melt.farm.registry import RUNNING_KEY, done_key, events_key
from melt.farm.signing import MAX_JOB_MESSAGE_BYTES, FarmKeys, MessageRefused, load_keys, sign, verify
from melt.store.paths import MAX_JOB_FILE_BYTES

#: How long a run's notes and records wait in Redis for their submitter (s).
EVENTS_TTL_S = 7 * 24 * 3600
#: Deliveries of one message before it is given up (the first plus one redelivery).
MAX_DELIVERIES = 2
#: The largest note read from (or written to) a run's list, as stored in Redis (bytes).
MAX_NOTE_BYTES = 320 * 1024 * 1024
#: The most a record's files may hold once decompressed, all files together (bytes).
MAX_RECORD_FILES_BYTES = 512 * 1024 * 1024
#: A job id as melt makes it (:mod:`melt.runner.matrix`), and a run id (:func:`melt.store.runs.new_run_id`).
JOB_ID = re.compile(r"^[0-9a-f]{16}$")
RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

_current: dict[str, Any] = {}  # this process's DeviceWorker, for the run it serves


def pack_files(files: dict[str, bytes]) -> dict[str, str]:
    """Files of a record -> ``{name: base64(zlib(data))}``."""
    return {name: base64.b64encode(zlib.compress(data, 6)).decode("ascii") for name, data in files.items()}


def unpack_files(packed: Any, *, max_file_bytes: int | None = None,
                 max_total_bytes: int | None = None) -> dict[str, bytes]:
    """The inverse of :func:`pack_files`, for files from another host: every size is bounded.

    Each file may hold ``max_file_bytes`` (default the store's limit per job
    file) once decompressed and all of them ``max_total_bytes`` (default
    :data:`MAX_RECORD_FILES_BYTES`), so a small payload that inflates to
    gigabytes stops at the limit. Raises :class:`~melt.errors.OutputTooLargeError`
    or :class:`FarmError` for data that is not base64 zlib.
    """
    per_file = MAX_JOB_FILE_BYTES if max_file_bytes is None else max_file_bytes
    left = MAX_RECORD_FILES_BYTES if max_total_bytes is None else max_total_bytes
    if not isinstance(packed, dict):
        raise FarmError("the record's files are not a mapping of names to data")
    out: dict[str, bytes] = {}
    for name, text in packed.items():
        what = f"the job file {str(name)[:80]!r} from the worker"
        if not isinstance(text, str):
            raise FarmError(f"{what} is not base64 text")
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise FarmError(f"{what} is not base64") from None
        limit = min(per_file, left)
        inflate = zlib.decompressobj()
        try:
            data = inflate.decompress(raw, limit + 1)
        except zlib.error as exc:
            raise FarmError(f"{what} is not zlib data: {exc}") from None
        if len(data) > limit or inflate.unconsumed_tail:
            if limit == per_file:
                raise OutputTooLargeError(f"{what}, decompressed,", per_file)
            raise OutputTooLargeError("the job files from the worker, decompressed,",
                                      MAX_RECORD_FILES_BYTES if max_total_bytes is None else max_total_bytes)
        if not inflate.eof:
            raise FarmError(f"{what} is truncated zlib data")
        out[name] = data
        left -= len(data)
    return out


def encode_note(note: dict[str, Any], keys: FarmKeys) -> str:
    """A note as it goes on a run's list: its job id first (for a note too large to read), then signed."""
    return json.dumps({"job": note.get("job_id"), "env": sign(note, "note", keys, ttl_s=EVENTS_TTL_S)},
                      default=str)


class _Notes:
    """DeviceWorker events, pushed to the run's list for the submitter's display (each one signed)."""

    def __init__(self, client: Any, run_id: str, device: str, keys: FarmKeys):
        self.client, self.run_id, self.key, self.device, self.keys = client, run_id, events_key(run_id), device, keys

    def push(self, note: dict[str, Any], *, pipe: Any = None) -> None:
        own = pipe is None
        pipe = self.client.pipeline() if own else pipe
        pipe.rpush(self.key, encode_note({**note, "run_id": self.run_id}, self.keys))
        pipe.expire(self.key, EVENTS_TTL_S)
        if own:
            pipe.execute()

    def stage(self, message: str) -> None:
        self.push({"kind": "stage", "device": self.device, "message": message})

    def job_started(self, job: Any, warmup: bool) -> None:
        self.push({"kind": "started", "job_id": job.job_id, "warmup": warmup})


def _worker_for(body: dict[str, Any], experiment: Any, spec: Any, notes: _Notes, models_dir: Path) -> Any:
    """This process's DeviceWorker for ``body``'s run (a new run closes the old one)."""
    from melt.runner.device_worker import DeviceWorker

    key = body["run_id"]
    if _current.get("key") != key or _current["worker"].broken:
        close_current()
        # the worker's own models folder, never a folder the message names
        worker = DeviceWorker(spec, experiment, {}, models_dir, events=notes,
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


def verified_body(message: Any, keys: FarmKeys) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the checked envelope, its body) of a job message, or :class:`MessageRefused`."""
    envelope = verify(message, "job", keys, max_bytes=MAX_JOB_MESSAGE_BYTES)
    body = envelope["body"]
    if not isinstance(body.get("run_id"), str) or not RUN_ID.match(body["run_id"]):
        raise MessageRefused("the message's run id is not one melt makes")
    if not isinstance(body.get("job_id"), str) or not JOB_ID.match(body["job_id"]):
        raise MessageRefused("the message's job id is not one melt makes")
    if not isinstance(body.get("experiment"), dict) or not isinstance(body.get("model_hashes"), dict):
        raise MessageRefused("the message carries no experiment")
    return envelope, body


def execute_payload(message: Any, *, task_id: str, spec: Any, client: Any, keys: FarmKeys | None = None,
                    seen: Any = None, allowed_sources: tuple[str, ...] | None = None,
                    models_dir: Path | None = None) -> str:
    """Run one job message on this device; returns what happened (for the worker log).

    ``keys``, ``seen`` (:class:`~melt.farm.replay.SeenMessages`),
    ``allowed_sources`` and ``models_dir`` default to this worker's own
    (its environment, its cache). A message that does not verify raises
    :class:`MessageRefused` and leaves no trace but the log line; a verified
    one always ends as a record on the run's list.
    """
    from melt.farm import policy
    from melt.farm.replay import SeenMessages

    keys = keys if keys is not None else load_keys(os.environ.get(BROKER_ENV))
    envelope, body = verified_body(message, keys)
    run_id, job_id = body["run_id"], body["job_id"]
    if client.sismember(done_key(run_id), job_id):
        return "skipped: already finished for this run"
    if seen is None:
        if "seen" not in _current:
            _current["seen"] = SeenMessages()
        seen = _current["seen"]
    deliveries = seen.deliver(envelope["id"], envelope["exp"])
    notes = _Notes(client, run_id, spec.name, keys)
    try:
        result = _execute(body, notes, spec, client, task_id, deliveries,
                          policy.worker_allowed_sources() if allowed_sources is None else allowed_sources,
                          policy.worker_models_dir() if models_dir is None else models_dir)
    except Exception as exc:  # a bug must not leave the submitter waiting: the job fails with it
        text = mask_secrets(str(exc), os.environ.get(BROKER_ENV, ""))  # a library's text may quote the URL
        _reject(notes, client, job_id, f"worker error on {socket.gethostname()}: {type(exc).__name__}: {text}")
        seen.finish(envelope["id"])
        raise
    seen.finish(envelope["id"])
    return result


def _reject(notes: _Notes, client: Any, job_id: str, reason: str) -> None:
    pipe = client.pipeline()
    notes.push({"kind": "rejected", "job_id": job_id, "reason": reason}, pipe=pipe)
    pipe.sadd(done_key(notes.run_id), job_id)
    pipe.expire(done_key(notes.run_id), EVENTS_TTL_S)
    pipe.delete(alive_key(notes.run_id, job_id))
    pipe.execute()


def _execute(body: dict[str, Any], notes: _Notes, spec: Any, client: Any, task_id: str, deliveries: int,
             allowed_sources: tuple[str, ...], models_dir: Path) -> str:
    from melt.config.loader import validate
    from melt.config.specs import ExperimentSpec
    from melt.farm import policy
    from melt.runner.matrix import expand

    run_id, job_id = body["run_id"], body["job_id"]
    try:
        experiment = validate(ExperimentSpec, body["experiment"], f"run {run_id}")
    except MeltError as exc:
        _reject(notes, client, job_id, f"worker on {socket.gethostname()}: {exc}")
        return "rejected: the experiment does not validate"
    refused = policy.refusals(experiment, allowed_sources)
    if refused:  # decided before anything is built, staged or run
        _reject(notes, client, job_id, f"worker on {socket.gethostname()} refuses the job: " + "; ".join(refused))
        return "rejected: " + "; ".join(refused)
    worker = _worker_for(body, experiment, spec, notes, models_dir)
    try:
        jobs = {j.job_id: j for j in expand(worker.experiment, body["model_hashes"])}
    except KeyError as exc:
        _reject(notes, client, job_id, f"the message has no model hash for {exc}")
        return "rejected: a model hash is missing"
    job = jobs.get(job_id)
    if job is None:  # a submitter of another melt version expands differently
        _reject(notes, client, job_id,
                f"worker on {socket.gethostname()} finds no job {job_id} in the experiment "
                f"(melt {body.get('melt_version')} submitted it; this worker runs another)")
        return "rejected: unknown job id"
    # the supervisor keeps the heartbeat fresh while this entry names the job (melt.farm.heartbeat)
    client.hset(RUNNING_KEY, spec.name, json.dumps({
        "run_id": run_id, "job_id": job_id, "pid": os.getpid(), "worker_pid": os.getppid(),
        "host": socket.gethostname(), "since": time.time(), "delivery": deliveries}))
    try:
        beat(client, notes.keys, run_id, job_id, spec.name)
        return _finish(worker, job, body, notes, spec, client, task_id, deliveries, models_dir)
    finally:
        client.hdel(RUNNING_KEY, spec.name)


def _finish(worker: Any, job: Any, body: dict[str, Any], notes: _Notes, spec: Any, client: Any, task_id: str,
            deliveries: int, models_dir: Path) -> str:
    """Run ``job`` (or give it up) and send its record, with the heartbeat's key deleted."""
    run_id, job_id = body["run_id"], body["job_id"]
    if deliveries > MAX_DELIVERIES:
        record = worker.failed_record(job, f"the worker running this job died {deliveries - 1} times; "
                                           "it is not delivered again")
    else:
        record = _run(worker, job, run_id, models_dir)
    files = record.pop("_files", {}) or {}
    record.setdefault("provenance", {})["farm"] = {"host": socket.gethostname(), "queue": f"device.{spec.name}",
                                                   "delivery": deliveries, "task_id": task_id}
    note = {"kind": "record", "job_id": job_id, "record": record, "files": pack_files(files)}
    if len(encode_note(note, notes.keys)) > MAX_NOTE_BYTES:  # the submitter would refuse it unread
        record = worker.failed_record(job, f"its record and files are over the farm's limit of "
                                           f"{MAX_NOTE_BYTES >> 20} MiB per note")
        record.pop("_files", None)
        note = {"kind": "record", "job_id": job_id, "record": record, "files": {}}
    pipe = client.pipeline()
    notes.push(note, pipe=pipe)
    pipe.sadd(done_key(run_id), job_id)
    pipe.expire(done_key(run_id), EVENTS_TTL_S)
    pipe.delete(alive_key(run_id, job_id))
    pipe.execute()
    return f"{record['status']}: {job.workload} #{job.repetition}"


def _run(worker: Any, job: Any, run_id: str, models_dir: Path) -> dict[str, Any]:
    """Resolve ``job``'s model on this host (checked by sha256), then execute it."""
    from melt.farm.policy import find_model
    from melt.runner.models import resolve_model

    name = job.model.name
    if name not in worker.models:
        index = next(i for i, m in enumerate(worker.experiment.models) if m.name == name)
        ref = job.model
        if ref.path is not None:  # found by its sha256 in this worker's folder, not at the message's path
            found = find_model(models_dir, job.model_sha256)
            if found is None:
                return worker.failed_record(job, f"model {name} (sha256 {job.model_sha256[:12]}…) is not in "
                                                 f"this worker's models folder {models_dir}: copy the file there")
            ref = ref.model_copy(update={"path": str(found)})
        try:
            model = resolve_model(ref, base=models_dir, source=f"run {run_id}", index=index)
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
    import logging

    log = logging.getLogger("melt.farm")

    @app.task(name=TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
    def execute_job(self: Any, message: Any) -> str:
        if "client" not in _current:
            _current["client"] = redis_client(env_url())
        try:
            return execute_payload(message, task_id=self.request.id, spec=_current["spec"],
                                   client=_current["client"])
        except MessageRefused as exc:  # nothing of it is trusted, not even the run it names
            log.warning("refused message %s: %s", str(self.request.id)[:80], exc)
            return f"refused: {exc}"

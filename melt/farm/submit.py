"""``melt run --farm``: a pool that sends each job to its device's queue.

:class:`FarmPool` is used by the runner exactly as the local pool is: it
yields ``("record", (job, record))`` as records arrive and the runner stores
them, so a farm run's folder, journal and index are those of a local run.

Each job is one Celery message on ``device.<name>`` with a stable task id
(``<run_id>.<job_id>``). Records come back through the run's Redis list; a
record that arrives twice is stored once. A run interrupted here is resumed
with ``melt run --resume RUN_ID --farm URL``: records that arrived while no
one was listening are read from the list first, and only the jobs still
missing are sent again.

A job whose worker host dies mid-job is recorded as failed, "worker lost",
within :data:`~melt.farm.heartbeat.LOST_BOUND_S` of its last heartbeat,
not after the broker's visibility timeout (:mod:`melt.farm.heartbeat`).
"""

from __future__ import annotations

import time
from typing import Any, Iterator

from melt import __version__
from melt.config.specs import ExperimentSpec
from melt.errors import ConfigError
from melt.farm.app import (TASK_NAME, FarmError, make_app, mask_secrets, ping, queue_name, redis_client,
                           safe_url)
from melt.farm.heartbeat import CHECK_INTERVAL_S, LOST_AFTER_S, LostJobs, read_beats
from melt.farm.notes import TooLarge, bounded_pop, open_note, record_from_note
from melt.farm.registry import done_key, events_key, farm_status
from melt.farm.signing import FarmKeys, load_keys, sign
from melt.farm.task import EVENTS_TTL_S, MAX_NOTE_BYTES
from melt.runner.matrix import Job
from melt.runner.records import failed_record


class FarmPool:
    """Runs jobs on a farm's workers through broker ``url`` (see module doc)."""

    name = "farm"
    remote = True  # device configs live with the workers

    def __init__(self, url: str, *, poll_s: float = 1.0, keys: FarmKeys | None = None,
                 check_s: float = CHECK_INTERVAL_S, lost_after_s: float = LOST_AFTER_S):
        self.url = url
        self.poll_s = poll_s
        self.check_s = check_s  # how often heartbeats are read
        self.lost_after_s = lost_after_s  # a started job silent this long is lost
        self.keys = keys
        self._refused = 0  # notes refused so far (the first few are shown)

    @property
    def description(self) -> str:
        return safe_url(self.url)

    def check(self, experiment: ExperimentSpec, source: str) -> None:
        """Refuse what a farm cannot run, before any run folder exists."""
        problems = [f"devices[{i}]: a farm run names devices (queues device.<name>), not files: {ref}"
                    for i, ref in enumerate(experiment.devices) if "/" in ref or ref.endswith((".yaml", ".yml"))]
        if experiment.adaptive is not None:
            problems.append("adaptive: adaptive repetition runs on a local pool only")
        for i, fw in enumerate(experiment.frameworks):
            if fw.binaries is not None:
                problems.append(f"frameworks[{i}].binaries: a farm worker runs only what it builds itself")
        if problems:
            raise ConfigError(source, problems)
        self._keys()  # no farm key: a one-line error saying how to set one
        ping(self.url)
        # a job still running when its message's visibility timeout ends would be delivered again
        longest = job_bound_s(experiment)
        for entry in farm_status(redis_client(self.url)):
            timeout = entry.info.get("visibility_timeout_s")
            if entry.device in experiment.devices and timeout and float(timeout) <= longest:
                raise ConfigError(source, [
                    f"timeout_s: a job may take up to {longest:.0f} s, not below the visibility timeout of "
                    f"{entry.device}'s worker on {entry.host} ({float(timeout):.0f} s); lower timeout_s or "
                    "start the worker with a larger --visibility-timeout"])

    def results(self, jobs: list[Job], ctx: Any) -> Iterator[tuple[str, Any]]:
        """Send ``jobs`` to their queues; yield each note and record as it comes back."""
        import redis
        from kombu.exceptions import OperationalError

        try:
            yield from self._results(jobs, ctx)
        except (redis.RedisError, OperationalError, OSError) as exc:  # their text may quote the URL
            raise FarmError(f"broker {safe_url(self.url)}: {mask_secrets(str(exc), self.url)}") from None

    def _results(self, jobs: list[Job], ctx: Any) -> Iterator[tuple[str, Any]]:
        client = redis_client(self.url)
        raw = redis_client(self.url, decode=False)  # notes are another host's bytes
        run_id = ctx.run_id
        by_id = {j.job_id: j for j in jobs}
        pending = set(by_id)
        # records that came back while no one was listening (a resumed run)
        for kind, payload in self._drain(raw, run_id, by_id, ctx, block=False):
            if kind == "record":
                if payload[0].job_id not in pending:
                    continue
                pending.discard(payload[0].job_id)
            yield kind, payload
        self._warn_missing_workers(client, {by_id[j].device for j in pending}, ctx)
        app = make_app(self.url)
        base = {"run_id": run_id, "experiment": ctx.experiment.model_dump(mode="json"),
                "model_hashes": {n: m.sha256 for n, m in ctx.models.items()}, "melt_version": __version__}
        keys = self._keys()
        with app.connection_for_write() as conn:
            for job in jobs:
                if job.job_id not in pending:
                    continue
                client.srem(done_key(run_id), job.job_id)  # sent again on purpose: run it again
                task_id = f"{run_id}.{job.job_id}"
                message = sign({**base, "job_id": job.job_id}, "job", keys)
                app.send_task(TASK_NAME, args=[message], task_id=task_id,
                              queue=queue_name(job.device), routing_key=queue_name(job.device),
                              connection=conn)
        ctx.events.stage(f"{len(pending)} jobs sent to the farm ({safe_url(self.url)})")
        lost = LostJobs(self.lost_after_s)
        next_check = 0.0
        while pending:
            for kind, payload in self._drain(raw, run_id, by_id, ctx, block=True):
                if kind == "record":
                    if payload[0].job_id not in pending:
                        continue  # a duplicate: recorded once
                    pending.discard(payload[0].job_id)
                yield kind, payload
            if pending and time.monotonic() >= next_check:
                next_check = time.monotonic() + self.check_s
                for job_id, reason in self._lost(raw, client, run_id, pending, lost).items():
                    pending.discard(job_id)
                    yield "record", (by_id[job_id], failed_record(by_id[job_id], reason))

    def _lost(self, raw: Any, client: Any, run_id: str, pending: set[str], lost: LostJobs) -> dict[str, str]:
        """The started jobs whose worker stopped beating, with the reason (:mod:`melt.farm.heartbeat`).

        Each is marked done for the run, so its message, delivered again
        once the visibility timeout ends, runs nothing; a late record from
        its first host arrives for a job no longer pending and is dropped.
        """
        beats = read_beats(raw, self._keys(), run_id, sorted(pending))
        found = lost.observe(beats, pending, time.monotonic())
        if found:
            pipe = client.pipeline()
            pipe.sadd(done_key(run_id), *found)
            pipe.expire(done_key(run_id), EVENTS_TTL_S)
            pipe.execute()
        return found

    def _drain(self, client: Any, run_id: str, by_id: dict[str, Job], ctx: Any,
               *, block: bool) -> Iterator[tuple[str, Any]]:
        """Notes and records from the run's list (all there are, or the next one).

        Every note is another host's word: one that is too large is dropped
        unread (its job fails, when its first bytes name one), one that is
        not signed with this farm's key or belongs to another run is
        dropped, and a record whose id or files do not check becomes a
        failed record with the reason (:func:`record_from_note`).
        """
        key = events_key(run_id)
        deadline = time.monotonic() + self.poll_s
        while True:
            raw = bounded_pop(client, key, MAX_NOTE_BYTES)
            if raw is None:
                if not block or time.monotonic() >= deadline:
                    return
                time.sleep(min(0.1, self.poll_s))
                continue
            if isinstance(raw, TooLarge):
                job = by_id.get(raw.job_hint or "")
                reason = (f"its worker's note is {raw.size:,} bytes, over the farm's limit of "
                          f"{MAX_NOTE_BYTES:,} bytes; it was dropped unread")
                if job is not None:
                    yield "record", (job, failed_record(job, reason))
                else:
                    ctx.events.stage(f"warning: a note on the farm was dropped: {reason}")
                if block:
                    return
                continue
            try:
                note = open_note(raw, self._keys(), run_id)
            except FarmError as exc:
                self._refused += 1
                if self._refused <= 3:
                    ctx.events.stage(f"warning: a note on the run's list was refused: {exc}")
                continue
            job = by_id.get(note.get("job_id")) if isinstance(note.get("job_id"), str) else None
            kind = note.get("kind")
            if kind == "record" and job is not None:
                yield "record", (job, record_from_note(job, note))
            elif kind == "rejected" and job is not None:
                yield "record", (job, failed_record(job, str(note.get("reason") or "rejected by its worker")))
            elif kind == "started" and job is not None:
                ctx.events.job_started(job, bool(note.get("warmup")))
            elif kind == "staging":
                yield "staging", note.get("info") if isinstance(note.get("info"), dict) else {}
            elif kind == "stage":
                ctx.events.stage(f"{note.get('device')}: {note.get('message')}")
            if block:
                return

    def _keys(self) -> FarmKeys:
        if self.keys is None:
            self.keys = load_keys(self.url)
        return self.keys

    def _warn_missing_workers(self, client: Any, devices: set[str], ctx: Any) -> None:
        online = {e.device for e in farm_status(client) if e.health == "online"}
        for device in sorted(devices - online):
            ctx.events.stage(f"no online worker serves {device}: its jobs wait in {queue_name(device)}")


def job_bound_s(experiment: ExperimentSpec) -> float:
    """An upper bound on one job's time on its device, cool-down waits aside (s).

    Each warm-up and each measured attempt (re-runs of throttled jobs
    included) may use ``timeout_s`` for each of its two timed windows.
    """
    return (experiment.warmup + 1 + experiment.rerun_throttled) * 2 * experiment.timeout_s

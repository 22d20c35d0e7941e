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
"""

from __future__ import annotations

import json
from typing import Any, Iterator

from melt import __version__
from melt.config.specs import ExperimentSpec
from melt.errors import ConfigError
from melt.farm.app import TASK_NAME, make_app, ping, queue_name, redis_client, safe_url
from melt.farm.registry import done_key, events_key, farm_status
from melt.farm.task import unpack_files
from melt.runner.matrix import Job
from melt.runner.records import failed_record


class FarmPool:
    """Runs jobs on a farm's workers through broker ``url`` (see module doc)."""

    name = "farm"
    remote = True  # device configs live with the workers

    def __init__(self, url: str, *, poll_s: float = 1.0):
        self.url = url
        self.poll_s = poll_s

    @property
    def description(self) -> str:
        return safe_url(self.url)

    def check(self, experiment: ExperimentSpec, source: str) -> None:
        """Refuse what a farm cannot run, before any run folder exists."""
        problems = [f"devices[{i}]: a farm run names devices (queues device.<name>), not files: {ref}"
                    for i, ref in enumerate(experiment.devices) if "/" in ref or ref.endswith((".yaml", ".yml"))]
        if experiment.adaptive is not None:
            problems.append("adaptive: adaptive repetition runs on a local pool only")
        if problems:
            raise ConfigError(source, problems)
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
        client = redis_client(self.url)
        run_id = ctx.run_id
        by_id = {j.job_id: j for j in jobs}
        pending = set(by_id)
        # records that came back while no one was listening (a resumed run)
        for kind, payload in self._drain(client, run_id, by_id, ctx, block=False):
            if kind == "record":
                if payload[0].job_id not in pending:
                    continue
                pending.discard(payload[0].job_id)
            yield kind, payload
        self._warn_missing_workers(client, {by_id[j].device for j in pending}, ctx)
        app = make_app(self.url)
        base = {"run_id": run_id, "experiment": ctx.experiment.model_dump(mode="json"),
                "model_hashes": {n: m.sha256 for n, m in ctx.models.items()},
                "base_dir": str(ctx.base_dir), "melt_version": __version__}
        with app.connection_for_write() as conn:
            for job in jobs:
                if job.job_id not in pending:
                    continue
                client.srem(done_key(run_id), job.job_id)  # sent again on purpose: run it again
                task_id = f"{run_id}.{job.job_id}"
                client.delete(f"melt:farm:deliveries:{task_id}")
                app.send_task(TASK_NAME, args=[{**base, "job_id": job.job_id}], task_id=task_id,
                              queue=queue_name(job.device), routing_key=queue_name(job.device),
                              connection=conn)
        ctx.events.stage(f"{len(pending)} jobs sent to the farm ({safe_url(self.url)})")
        while pending:
            for kind, payload in self._drain(client, run_id, by_id, ctx, block=True):
                if kind == "record":
                    if payload[0].job_id not in pending:
                        continue  # a duplicate: recorded once
                    pending.discard(payload[0].job_id)
                yield kind, payload

    def _drain(self, client: Any, run_id: str, by_id: dict[str, Job], ctx: Any,
               *, block: bool) -> Iterator[tuple[str, Any]]:
        """Notes and records from the run's list (all there are, or the next one)."""
        key = events_key(run_id)
        while True:
            if block:
                item = client.blpop([key], timeout=self.poll_s)
                raw = item[1] if item else None
            else:
                raw = client.lpop(key)
            if raw is None:
                return
            try:
                note = json.loads(raw)
            except ValueError:
                continue
            job = by_id.get(note.get("job_id", ""))
            kind = note.get("kind")
            if kind == "record" and job is not None:
                record = note["record"]
                record["_files"] = unpack_files(note.get("files") or {})
                yield "record", (job, record)
            elif kind == "rejected" and job is not None:
                yield "record", (job, rejected_record(job, note.get("reason") or "rejected by its worker"))
            elif kind == "started" and job is not None:
                ctx.events.job_started(job, bool(note.get("warmup")))
            elif kind == "staging":
                yield "staging", note.get("info") or {}
            elif kind == "stage":
                ctx.events.stage(f"{note.get('device')}: {note.get('message')}")
            if block:
                return

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


def rejected_record(job: Job, reason: str) -> dict[str, Any]:
    """A failed record made here, for a job a worker could not even identify."""
    return failed_record(job, reason)

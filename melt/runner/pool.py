"""The local executor: the jobs of different devices in parallel on this host.

One :class:`~melt.runner.device_worker.DeviceWorker` per device, each in its
own thread, so one device never runs two jobs at once while different
devices run side by side. Builds are shared (one per key), models are
resolved and hashed once by the runner. Workers hand their records to the
caller's thread through a queue: only that thread writes the store.

With a single device the worker runs in the caller's thread (Ctrl-C then
stops the job in flight, as a plain run always did). With several, Ctrl-C
lets each device finish the job it is running, restores every device's
state, and then raises ``KeyboardInterrupt``.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
from typing import Any, Callable, Iterator

from melt.runner.device_worker import BuildCache, DeviceWorker
from melt.runner.matrix import Job

#: A message from a device loop: ("record", (job, record)) | ("staging", info) | ("done", device)
Message = tuple[str, Any]


@dataclasses.dataclass
class RunContext:
    """What a pool needs from the runner to turn jobs into records."""

    run_id: str
    experiment: Any  # ExperimentSpec
    models: dict[str, Any]  # name -> ResolvedModel
    device_specs: dict[str, Any]  # device ref -> DeviceSpec
    base_dir: Any  # Path
    events: Any  # RunEvents
    executor: Any = None  # an invocation Executor forced on every device (tests)
    stored_record: Callable[[str], dict | None] = lambda job_id: None  # earlier attempts (adaptive)
    #: device -> settings that could not be restored when its worker closed (see DeviceWorker.close)
    restore_failed: dict[str, list[dict]] = dataclasses.field(default_factory=dict)


class LocalPool:
    """Runs jobs on this host's devices, one thread per device (see module doc)."""

    name = "local"

    def __init__(self) -> None:
        self.builds = BuildCache()

    def results(self, jobs: list[Job], ctx: RunContext) -> Iterator[Message]:
        """Run ``jobs``; yields messages as devices finish jobs (in the caller's thread)."""
        by_device: dict[str, list[Job]] = {}
        for job in jobs:
            by_device.setdefault(job.device, []).append(job)
        if len(by_device) <= 1:
            for device, device_jobs in by_device.items():
                yield from self._device_loop(device, device_jobs, ctx, threading.Event())
            return
        yield from self._threaded(by_device, ctx)

    def _threaded(self, by_device: dict[str, list[Job]], ctx: RunContext) -> Iterator[Message]:
        inbox: queue.Queue[Message] = queue.Queue()
        stop = threading.Event()

        def target(device: str, device_jobs: list[Job]) -> None:
            try:
                for message in self._device_loop(device, device_jobs, ctx, stop):
                    inbox.put(message)
            except BaseException as exc:  # noqa: BLE001 - reported to the caller's thread
                inbox.put(("error", exc))
            finally:
                inbox.put(("done", device))

        threads = [threading.Thread(target=target, args=item, name=f"melt-device-{item[0]}", daemon=True)
                   for item in by_device.items()]
        for t in threads:
            t.start()
        running = len(threads)
        try:
            while running:
                try:
                    kind, payload = inbox.get(timeout=0.2)
                except queue.Empty:
                    continue
                if kind == "done":
                    running -= 1
                elif kind == "error":
                    raise payload
                else:
                    yield kind, payload
        except GeneratorExit:  # the caller stopped listening (its own Ctrl-C)
            stop.set()
            for t in threads:
                t.join()
            raise
        except BaseException:
            stop.set()
            for t in threads:  # each finishes its current job and restores its device
                t.join()
            while not inbox.empty():  # records that finished meanwhile are still stored
                kind, payload = inbox.get_nowait()
                if kind in ("record", "staging"):
                    yield kind, payload
            raise

    def _device_loop(self, device: str, jobs: list[Job], ctx: RunContext,
                     stop: threading.Event) -> Iterator[Message]:
        """One device's jobs in order, with adaptive repetitions; yields its messages.

        The device's state is restored when the loop ends, however it ends;
        what could not be put back goes to ``ctx.restore_failed``.
        """
        spec = ctx.device_specs[device]
        staged: list[dict] = []
        worker = DeviceWorker(spec, ctx.experiment, ctx.models, ctx.base_dir, builds=self.builds,
                              events=ctx.events, executor=ctx.executor, on_staging=staged.append)
        rule = ctx.experiment.adaptive
        try:
            for i, job in enumerate(jobs):
                if stop.is_set():
                    return
                record = worker.execute(job)
                while staged:
                    yield "staging", staged.pop(0)
                yield "record", (job, record)
                last_of_cell = i == len(jobs) - 1 or jobs[i + 1].cell_id != job.cell_id
                if last_of_cell and rule is not None and not worker.broken:
                    yield from self._adapt(worker, job, record, ctx, stop)
        finally:
            worker.close()
            if worker.restore_failures:
                ctx.restore_failed[spec.name] = worker.restore_failures

    def _adapt(self, worker: DeviceWorker, job: Job, last: dict, ctx: RunContext,
               stop: threading.Event) -> Iterator[Message]:
        """More repetitions of ``job``'s cell while its confidence interval is too wide."""
        from melt.telemetry.repeat import needs_more

        rule = ctx.experiment.adaptive
        # the cell's records so far (this run and, on resume, earlier attempts): at most max_repetitions
        cell = []
        for rep in range(rule.max_repetitions):
            jid = dataclasses.replace(job, repetition=rep).job_id
            cell.append(last if jid == last["job_id"] else ctx.stored_record(jid))
        cell = [r for r in cell if r is not None]
        values = [j["metrics"][rule.metric] for j in cell
                  if j["status"] == "ok" and isinstance(j["metrics"].get(rule.metric), (int, float))]
        repetition = max((j["repetition"] for j in cell), default=job.repetition)
        while values and not stop.is_set() and needs_more(
                values, rel_half_width=rule.rel_half_width, min_n=ctx.experiment.repetitions,
                max_n=rule.max_repetitions):
            repetition += 1
            extra = dataclasses.replace(job, repetition=repetition)
            record = worker.execute(extra)
            yield "record", (extra, record)
            value = record["metrics"].get(rule.metric)
            if record["status"] != "ok" or not isinstance(value, (int, float)):
                break
            values.append(value)

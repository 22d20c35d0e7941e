"""Records the runner makes itself, for a job whose own record could not be used."""

from __future__ import annotations

from typing import Any

from melt.runner.matrix import Job
from melt.store.runs import utc_now


def failed_record(job: Job, reason: str) -> dict[str, Any]:
    """A failed record of ``job`` made on this host, with ``reason`` and no files."""
    now = utc_now()
    return {"job_id": job.job_id, "cell_id": job.cell_id, "status": "failed", "reason": reason,
            "device": job.device, "framework": job.framework.name, "model": job.model.name,
            "workload": job.workload, "kind": job.kind, "params": job.params, "repetition": job.repetition,
            "simulated": None, "started_at": now, "finished_at": now, "metrics": {}, "provenance": {},
            "_files": {}}

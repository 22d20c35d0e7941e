"""Expand an experiment into its job matrix.

devices x frameworks x models x workloads x parameter combinations x
repetitions. Pure: no device is touched. A job id is a hash of what defines
the job, so the same experiment gives the same ids every time, and the
cell id (the same hash without the repetition) groups repetitions for
statistics and history.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, field
from typing import Any

from melt.config.specs import ExperimentSpec, FrameworkRef, ModelRef

# Workload fields that are not parameters of the invocation.
_NOT_PARAMS = {"kind", "name"}


def stable_hash(obj: Any, length: int = 16) -> str:
    """Hex digest of a JSON-able object, independent of key order."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


@dataclass(frozen=True)
class Job:
    """One measured execution."""

    device: str
    framework: FrameworkRef
    model: ModelRef
    model_sha256: str
    workload: str
    kind: str
    params: dict[str, Any] = field(hash=False)
    repetition: int

    def definition(self) -> dict[str, Any]:
        """What makes two jobs comparable (everything but the repetition)."""
        return {
            "device": self.device,
            "framework": self.framework.name,
            "framework_source": self.framework.source,
            "framework_profile": self.framework.profile,
            "model_sha256": self.model_sha256,
            "kind": self.kind,
            "params": self.params,
        }

    @property
    def cell_id(self) -> str:
        return stable_hash(self.definition())

    @property
    def job_id(self) -> str:
        return stable_hash({**self.definition(), "repetition": self.repetition})


def param_grid(workload: Any) -> list[dict[str, Any]]:
    """Every combination of a workload's list-valued fields, as scalar dicts."""
    fields = {
        k: v for k, v in workload.model_dump().items() if k not in _NOT_PARAMS and v is not None
    }
    keys = sorted(fields)
    values = [fields[k] if isinstance(fields[k], list) else [fields[k]] for k in keys]
    return [dict(zip(keys, combo)) for combo in itertools.product(*values)]


def expand(experiment: ExperimentSpec, model_hashes: dict[str, str]) -> list[Job]:
    """The job list in execution order: grouped by device, framework, model, cell."""
    jobs: list[Job] = []
    for device in experiment.devices:
        for fw in experiment.frameworks:
            for model in experiment.models:
                for wl in experiment.workloads:
                    for params in param_grid(wl):
                        for rep in range(experiment.repetitions):
                            jobs.append(
                                Job(
                                    device=device,
                                    framework=fw,
                                    model=model,
                                    model_sha256=model_hashes[model.name],
                                    workload=wl.name,
                                    kind=wl.kind,
                                    params=params,
                                    repetition=rep,
                                )
                            )
    return jobs

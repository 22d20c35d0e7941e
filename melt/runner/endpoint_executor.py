"""Jobs on an OpenAI-compatible endpoint: the streamed workloads, measured from this machine.

A ``kind: endpoint`` device has no shell: nothing is built or staged
(:func:`prepared_for`), and :meth:`EndpointExecutor.measure` runs the job's
serve, conversation or sustained exchange with the same client the device
jobs use (:func:`melt.frameworks.llamacpp.served.run_endpoint_client`). The
transcript is the job's output, so the framework turns it into the same
metrics as on a phone (TTFT, ITL percentiles, decode tok/s, per-turn rows);
:mod:`melt.runner.endpoint_metrics` adds the network's part and the server's
own usage counts.

Energy and temperature are absent with the reason ``remote endpoint``. The
energy a phone's radio spends to reach the endpoint is not modelled: a
:class:`RadioModel` given to the executor would provide ``energy_radio_j``;
without one it is absent and says why.

The API key goes into the request header only: every reason a job fails
with is scrubbed of it, and neither the command recorded nor the device's
properties hold it.
"""

from __future__ import annotations

import json
import time
from typing import Any, Mapping, Protocol

from melt.errors import JobFailed, MeltError
from melt.runner.endpoint_metrics import REMOTE, absent_metrics, endpoint_metrics
from melt.runner.execute import Execution

#: The workload kinds an endpoint runs (it has no llama-bench, no perplexity tool).
ENDPOINT_KINDS = ("serve", "conversation", "sustained")


class RadioModel(Protocol):
    """The energy a phone's radio would spend on a job's traffic (not provided by melt)."""

    name: str

    def energy_j(self, transcript: Mapping[str, Any]) -> float | None:
        """Joules for the requests of ``transcript`` (bytes and times are in it), or None."""


def scrub(text: str, secret: str | None) -> str:
    """``text`` with every occurrence of ``secret`` replaced by ``***``."""
    return text.replace(secret, "***") if secret else text


def prepared_for(device: Any, framework_name: str) -> Any:
    """The worker's :class:`~melt.runner.device_worker.Prepared` for an endpoint: nothing built or staged."""
    from melt.frameworks.registry import get_framework
    from melt.runner.device_worker import Prepared

    class _AnyModel(dict):  # every model of the experiment is "on" the endpoint already
        def __contains__(self, key: object) -> bool:
            return True

        def __missing__(self, key: str) -> str:
            return ""

    props = device.properties()
    build = {"remote": f"served by {props['scheme']}://{props['host']}:{props['port']} (not built by melt)",
             "model": props["model"]}
    return Prepared(get_framework(framework_name), "", build, _AnyModel())


class EndpointExecutor:
    """Measures one job against an endpoint device (see the module doc)."""

    def __init__(self, radio: RadioModel | None = None):
        self.radio = radio

    def measure(self, device: Any, framework: Any, job: Any) -> tuple[str, dict[str, str], Execution]:
        """(the request it makes, as text; no environment; the execution). Raises :class:`JobFailed`."""
        from melt.frameworks.llamacpp.served import run_endpoint_client

        ep = device.spec.endpoint
        command = f"POST {ep.base_url}/chat/completions (model {ep.model}, stream)"
        if job.kind not in ENDPOINT_KINDS:
            raise JobFailed(f"{device.name} is a remote endpoint: it runs {', '.join(ENDPOINT_KINDS)} "
                            f"workloads, not {job.kind}")
        p = framework.validate_params(job.kind, job.params)
        client = device.client(stall_timeout_s=p["stall_timeout_s"])
        t0 = time.monotonic()
        try:
            transcript = run_endpoint_client(job.kind, p, client)
        except JobFailed as exc:
            retries = f"; {client.retries_used} retries in this job" if client.retries_used else ""
            raise JobFailed(scrub(exc.reason, device.api_key) + retries) from None
        except MeltError as exc:  # a stream over its bound, ...
            raise JobFailed(scrub(str(exc), device.api_key)) from None
        except Exception as exc:  # noqa: BLE001 - a bug: its message may hold what a server sent
            raise RuntimeError(scrub(f"{type(exc).__name__}: {exc}", device.api_key)) from None
        duration = time.monotonic() - t0
        metrics, missing, notes = endpoint_metrics(transcript)
        missing.update(absent_metrics(transcript.get("kind", job.kind)))
        if self.radio is not None:
            value = self.radio.energy_j(transcript)
            if value is not None:
                metrics["energy_radio_j"] = value
                notes["radio_model"] = self.radio.name
        else:
            missing["energy_radio_j"] = (f"{REMOTE}: the energy the phone's radio spends on the traffic "
                                         "is not modelled (no RadioModel)")
        provenance: dict[str, Any] = {"endpoint": {**notes, "retries": transcript.get("retries", 0),
                                                   "transport": transcript.get("transport")},
                                      "metrics_missing": missing}
        provenance.update(_tables(transcript))
        stdout = scrub(json.dumps(transcript), device.api_key)
        return command, {}, Execution(stdout, "", 0, duration, metrics=metrics, provenance=provenance)


def _tables(transcript: Mapping[str, Any]) -> dict[str, Any]:
    """Per-turn rows and per-conversation totals; a sustained run's tok/s series (host times)."""
    from melt.frameworks.llamacpp.stream_metrics import token_rate_series, turn_rows
    from melt.runner.served import conversation_totals

    out: dict[str, Any] = {}
    if "conversations" in transcript:
        rows = []
        for row in turn_rows(transcript):
            row["start_s"], row["end_s"] = round(row.pop("sent_s"), 6), round(row.pop("done_s"), 6)
            row.pop("first_token_s", None)
            rows.append(row)
        out["turns"] = rows
        out["conversation_totals"] = conversation_totals(rows)
    if transcript.get("kind") == "sustained":
        out["series"] = [{"start_s": round(w["start_s"], 6), "end_s": round(w["end_s"], 6),
                          "tokens": w["tokens"], "tps": w["tps"]}
                         for w in token_rate_series(transcript, float(transcript.get("window_s") or 5.0))]
    return out

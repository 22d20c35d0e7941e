"""An OpenAI-compatible endpoint as a device: a target with no shell.

``kind: endpoint`` names a server (``base_url`` ending in ``/v1``), the model
name it expects and the environment variable holding its API key. Nothing
is built or staged for it; the streamed workloads (serve, conversation,
sustained) run against it from this machine (:mod:`melt.runner.endpoint_executor`).
What it can say about itself is what its config says: the host, the
scheme, the model; never the key.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

from melt.config.specs import DeviceSpec
from melt.devices.base import Device
from melt.errors import MeltError


class NoShell:
    """The transport of a target melt cannot run commands on: every call says so."""

    name = "endpoint"

    def __init__(self, device: str):
        self.device = device

    def _refuse(self, *args: Any, **kw: Any) -> NoReturn:
        raise MeltError(f"{self.device} is a remote endpoint: melt cannot run commands on it")

    run = shell = start = push = pull = kill = forward = _refuse

    def close(self) -> None:
        pass


class EndpointDevice(Device):
    """A remote server speaking the OpenAI chat completions API (see the module doc)."""

    def __init__(self, spec: DeviceSpec, api_key: str | None):
        super().__init__(spec, NoShell(spec.name))  # type: ignore[arg-type]
        self._api_key = api_key

    @classmethod
    def connect(cls, spec: DeviceSpec) -> "EndpointDevice":
        """The endpoint with its key read from ``api_key_env`` (nothing is sent yet).

        Raises :class:`MeltError` when the config names a variable that is not set.
        """
        ep = spec.endpoint
        assert ep is not None  # the spec's validator requires it for kind endpoint
        key = None
        if ep.api_key_env:
            key = os.environ.get(ep.api_key_env)
            if not key:
                raise MeltError(f"{spec.name}: the environment variable {ep.api_key_env} (its API key) "
                                "is not set")
        return cls(spec, key)

    @property
    def api_key(self) -> str | None:
        """The key, for the request header only."""
        return self._api_key

    def client(self, *, stall_timeout_s: float | None = None) -> Any:
        """A streaming client of this endpoint
        (:class:`~melt.frameworks.llamacpp.server_client.ServerClient`)."""
        from melt.frameworks.llamacpp.server_client import ServerClient

        ep = self.spec.endpoint
        assert ep is not None
        timeout = ep.timeout_s if stall_timeout_s is None else min(ep.timeout_s, stall_timeout_s)
        return ServerClient.for_url(ep.base_url, model=ep.model, api_key=self._api_key, timeout_s=timeout,
                                    verify_tls=ep.verify_tls, ca_file=ep.ca_file,
                                    max_response_bytes=ep.max_response_bytes, retries=ep.retries,
                                    retry_backoff_s=ep.retry_backoff_s, max_concurrency=ep.max_concurrency)

    def health(self) -> dict[str, Any]:
        """Whether it answers ``GET /models`` with this key: ``{"answers": True, "rtt_ms": ...}``.

        Raises :class:`MeltError` (the key scrubbed) when it does not.
        """
        import http.client

        from melt.errors import JobFailed
        from melt.runner.endpoint_executor import scrub

        try:
            rtts = self.client(stall_timeout_s=10.0).round_trip_s(1, path="/models")
        except JobFailed as exc:
            raise MeltError(scrub(exc.reason, self._api_key)) from None
        except (OSError, http.client.HTTPException) as exc:
            raise MeltError(scrub(f"{self.name} does not answer: {exc or type(exc).__name__}",
                                  self._api_key)) from None
        return {"answers": True, "rtt_ms": round(1000 * rtts[0], 3)}

    def workdir(self) -> str:
        raise MeltError(f"{self.name} is a remote endpoint: it has no working folder")

    def stage(self, local: Path, *, category: str) -> str:
        raise MeltError(f"{self.name} is a remote endpoint: nothing is copied to it")

    def properties(self) -> dict[str, Any]:
        ep = self.spec.endpoint
        assert ep is not None
        url = urlsplit(ep.base_url)
        return {
            "kind": "endpoint",
            "host": url.hostname,
            "port": url.port or (443 if url.scheme == "https" else 80),
            "scheme": url.scheme,
            "path": url.path,
            "model": ep.model,
            "auth": f"bearer key from ${ep.api_key_env}" if ep.api_key_env else "none",
            "verify_tls": ep.verify_tls if url.scheme == "https" else None,
            "max_concurrency": ep.max_concurrency,
            "retries": ep.retries,
            "simulated": False,
        }

    def close(self) -> None:
        self._api_key = None

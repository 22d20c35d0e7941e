"""Host-side clients of the three llama-server workload kinds.

Each is called with a *live server* (see :class:`LiveServer`) while
``llama-server`` runs on the device, and returns a transcript (a JSON-able
dict) that :mod:`melt.frameworks.llamacpp.stream_metrics` turns into metrics:

``serve``
    ``requests`` streamed completions of one prompt, ``concurrency`` at a time.
``conversation``
    MELT's conversations replayed turn by turn as a chat app does: the
    history (user turns and the model's own answers) goes through the
    model's chat template (``/apply-template``) and the server keeps the
    context between turns (``cache_prompt``), so only the new part of each
    turn is prefilled.
``sustained``
    completions back to back, cycling through MELT's sustained prompts, for
    ``duration_s`` seconds.

:func:`run_endpoint_client` runs the same three against an OpenAI-compatible
endpoint (``/chat/completions``, the endpoint's own chat template; a serve
prompt is one user message), at most ``max_concurrency`` requests at once.

The server is started with ``--port 0`` and says where it listens in its
log; the client reaches it through ``transport.forward`` and waits for
``/health``. A server that exits, or stays silent past ``startup_timeout_s``,
fails the job with the last line of its log.
"""

from __future__ import annotations

import http.client
import re
import socket
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Mapping, Protocol

from melt.errors import JobFailed
from melt.frameworks.llamacpp.server_client import ServerClient, StreamedCompletion

_LISTENING = re.compile(r"listening on https?://[^\s:]+:(\d+)")


class LiveServer(Protocol):
    """A server process running on a device, as a client sees it."""

    transport: Any  # melt.transports.base.Transport

    def running(self) -> bool:
        """False once the server process has ended."""

    def log(self) -> str:
        """What the server has written to stderr so far."""


def wait_for_port(live: LiveServer, timeout_s: float) -> int:
    """The port the server printed (``listening on http://127.0.0.1:PORT``).

    Raises :class:`JobFailed` when the server exits first or the line does not
    come within ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        text = live.log()
        found = _LISTENING.search(text)
        if found:
            return int(found.group(1))
        if not live.running():
            raise JobFailed(f"llama-server exited before it listened: {_cause(live.log())}")
        if time.monotonic() > deadline:
            raise JobFailed(f"llama-server did not come up within {timeout_s:g} s: {_cause(text)}")
        time.sleep(0.2)


def wait_for_health(client: ServerClient, live: LiveServer, timeout_s: float) -> float:
    """Poll ``/health`` until 200 (the model is loaded); returns the host time it answered."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while True:
        try:
            status = client.health(timeout=5.0)
            if status == 200:
                return client.now()
            last = f"HTTP {status}"
        except OSError as exc:
            last = str(exc) or type(exc).__name__
        except Exception as exc:  # http.client's protocol errors while the port is half open
            last = str(exc) or type(exc).__name__
        if not live.running():
            raise JobFailed(f"llama-server exited while loading: {_cause(live.log())}")
        if time.monotonic() > deadline:
            raise JobFailed(f"llama-server did not become ready within {timeout_s:g} s ({last})")
        time.sleep(0.1)


def _cause(log: str) -> str:
    lines = [ln.strip() for ln in log.splitlines() if ln.strip()]
    for ln in lines:
        if re.search(r"\berror\b|failed|couldn't|cannot", ln, re.I):
            return ln[:300]
    return lines[-1][:300] if lines else "(no output)"


def run_client(kind: str, params: Mapping[str, Any], live: LiveServer) -> dict[str, Any]:
    """Reach the server, run the kind's exchange, return the transcript (see the module doc)."""
    port = wait_for_port(live, params["startup_timeout_s"])
    with live.transport.forward(port) as fwd:
        client = ServerClient(fwd.local_port, stall_timeout_s=params["stall_timeout_s"])
        ready = wait_for_health(client, live, params["startup_timeout_s"])
        try:
            rtts = client.round_trip_s(5)
        except (OSError, http.client.HTTPException) as exc:
            raise JobFailed(f"llama-server stopped answering: {exc or type(exc).__name__}") from None
        transcript: dict[str, Any] = {"kind": kind, "device_port": port, "ready_s": round(ready, 6),
                                      "transport": _rtt(getattr(live.transport, "name", "?"), rtts)}
        return _exchange(kind, client, params, transcript)


def run_endpoint_client(kind: str, params: Mapping[str, Any], client: ServerClient) -> dict[str, Any]:
    """The same exchange against an OpenAI-compatible endpoint (``client.for_url``): requests go
    to ``/chat/completions``; the round trips of ``GET /models`` are the network's latency."""
    try:
        rtts = client.round_trip_s(5, path="/models")
    except socket.timeout:
        raise JobFailed(f"{client.label} did not answer /models within {client.stall_timeout_s:g} s") from None
    except (OSError, http.client.HTTPException) as exc:
        raise JobFailed(f"{client.label} is not reachable: {exc or type(exc).__name__}") from None
    transcript: dict[str, Any] = {"kind": kind, "ready_s": round(client.now(), 6),
                                  "transport": _rtt("endpoint", rtts), "model": client.model}
    transcript = _exchange(kind, client, params, transcript)
    transcript["retries"] = client.retries_used
    return transcript


def _rtt(name: str, rtts: list[float]) -> dict[str, Any]:
    return {"name": name, "rtt_ms_min": round(1000 * min(rtts), 3),
            "rtt_ms_median": round(1000 * statistics.median(rtts), 3), "probes": len(rtts)}


def _exchange(kind: str, client: ServerClient, params: Mapping[str, Any],
              transcript: dict[str, Any]) -> dict[str, Any]:
    if kind == "serve":
        transcript["requests"] = _serve(client, params)
    elif kind == "conversation":
        transcript["conversations"] = _conversations(client, params)
    elif kind == "sustained":
        transcript["window_s"] = params["window_s"]
        transcript["requests"] = _sustained(client, params)
    else:
        raise JobFailed(f"no client for workload kind {kind!r}")
    transcript["end_s"] = round(client.now(), 6)
    return transcript


def _stream(client: ServerClient, prompt: str, p: Mapping[str, Any]) -> StreamedCompletion:
    if client.api == "openai":
        return _turn(client, [{"role": "user", "content": prompt}], p)
    return client.stream(prompt, n_predict=p["n_predict"], ignore_eos=p["ignore_eos"],
                         temperature=p["temperature"], seed=p["seed"], cache_prompt=p["cache_prompt"])


def _turn(client: ServerClient, messages: list[dict[str, str]], p: Mapping[str, Any]) -> StreamedCompletion:
    """One chat turn: an endpoint applies its own template; melt's llama-server is asked for it."""
    if client.api == "openai":
        return client.chat_stream(messages, n_predict=p["n_predict"], ignore_eos=p["ignore_eos"],
                                  temperature=p["temperature"], seed=p["seed"])
    return _stream(client, client.apply_template(messages), p)


def _serve(client: ServerClient, p: Mapping[str, Any]) -> list[dict[str, Any]]:
    n, conc = p["requests"], min(p["concurrency"], client.max_concurrency or p["concurrency"])
    if conc == 1:
        return [dict(_stream(client, p["prompt"], p).as_dict(), slot=0) for _ in range(n)]
    with ThreadPoolExecutor(max_workers=conc) as pool:
        done = list(pool.map(lambda i: dict(_stream(client, p["prompt"], p).as_dict(), slot=i % conc),
                             range(n)))
    return sorted(done, key=lambda r: r["sent_s"])


def _conversations(client: ServerClient, p: Mapping[str, Any]) -> list[dict[str, Any]]:
    from melt.prompts import conversations, pick_conversations

    chosen = pick_conversations(index=p["conversation"], sample=p["sample"], seed=p["seed"])
    out = []
    for index in chosen:
        user_turns = conversations()[index]
        if p["turns"] is not None:
            user_turns = user_turns[: p["turns"]]
        messages: list[dict[str, str]] = []
        turns = []
        for number, text in enumerate(user_turns):
            messages.append({"role": "user", "content": text})
            done = _turn(client, messages, p)
            messages.append({"role": "assistant", "content": done.text})
            turns.append(dict(done.as_dict(), turn=number, user_chars=len(text)))
        out.append({"index": index, "turns": turns})
    return out


def _sustained(client: ServerClient, p: Mapping[str, Any]) -> list[dict[str, Any]]:
    from melt.prompts import sustained_prompts

    prompts = sustained_prompts()
    start = time.monotonic()
    out: list[dict[str, Any]] = []
    i = 0
    while time.monotonic() - start < p["duration_s"]:
        done = _stream(client, prompts[i % len(prompts)], p)
        out.append(dict(done.as_dict(), prompt_index=i % len(prompts)))
        i += 1
    return out

"""The Celery app of the farm, and the broker URL handling.

Settings follow Celery's advice for long, non-idempotent-on-the-device work:
the message is acknowledged only after the job (``task_acks_late``), a worker
process that dies mid-job gives its message back
(``task_reject_on_worker_lost``), each worker reserves one message at a time
(``worker_prefetch_multiplier=1``, concurrency 1), and Redis keeps an
unacknowledged message invisible for longer than any job may take
(``visibility_timeout``), after which it is delivered again. A job whose
host died is not left waiting for that: its heartbeat stops and the
submitter records it as lost within seconds (:mod:`melt.farm.heartbeat`).

No result backend: each job's record travels back through a Redis list of
its run (:mod:`melt.farm.task`), which a resumed run can still read.

The broker URL may carry a password. It is passed to worker processes in the
environment (``MELT_FARM_BROKER``), never on a command line, and shown only
through :func:`safe_url`.
"""

from __future__ import annotations

import os
import re
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from melt.errors import MeltError

#: Environment variable that carries the broker URL to worker processes.
BROKER_ENV = "MELT_FARM_BROKER"
#: Default seconds a reserved message stays invisible before Redis hands it out again.
VISIBILITY_TIMEOUT_S = 6 * 3600
TASK_NAME = "melt.farm.execute_job"


class FarmError(MeltError):
    """The broker cannot be reached, or the farm cannot take this run."""


def queue_name(device: str) -> str:
    """The queue of one device: ``device.<name>``."""
    return f"device.{device}"


#: Query parameters whose value is a secret (``redis://host/0?password=...`` is a valid broker URL).
_SECRET_PARAMS = re.compile(r"pass|pwd|secret|token|key|auth|cred", re.IGNORECASE)


def safe_url(url: str) -> str:
    """``url`` with its secrets replaced by ``***`` (for logs, results and messages).

    Masked: the password of ``user:password@`` (a lone ``secret@`` too, which
    Redis takes as a password) and the value of every query parameter whose
    name says it is a secret (``?password=``, ``token=``, ...).
    """
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - a port out of range is a ValueError
    except ValueError:
        return "<unparseable URL>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        netloc = f"{user}:***@{hostport}" if colon and user else f":***@{hostport}" if colon else f"***@{hostport}"
    query = "&".join(
        f"{name}={'***' if _SECRET_PARAMS.search(unquote(name)) else value}" if eq else name
        for name, eq, value in (item.partition("=") for item in parts.query.split("&") if item))
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def mask_secrets(text: str, url: str) -> str:
    """``text`` with every secret of ``url`` (password, secret query values) replaced by ``***``.

    For messages made by libraries that may quote the URL or its password.
    """
    if not url:
        return text
    try:
        parts = urlsplit(url)
        # a lone "secret@" is the password to Redis
        secrets = [parts.password if parts.password is not None else parts.username or ""]
        secrets += [value for name, _, value in (q.partition("=") for q in parts.query.split("&"))
                    if value and _SECRET_PARAMS.search(unquote(name))]
    except ValueError:
        return text.replace(url, "<unparseable URL>")
    text = text.replace(url, safe_url(url))
    for secret in {s for s in secrets if s} | {unquote(s) for s in secrets if s}:
        if len(secret) >= 3:
            text = text.replace(secret, "***")
    return text


def check_url(url: str) -> str:
    """``url`` if it is a Redis URL, else a :class:`FarmError` (without the password)."""
    try:
        scheme = urlsplit(url).scheme
    except ValueError:
        scheme = ""
    if scheme not in ("redis", "rediss"):
        raise FarmError(f"broker {safe_url(url)}: expected redis://[:PASSWORD@]HOST:PORT/DB")
    parts = urlsplit(url)
    if "@" in parts.netloc and parts.password is None:  # Redis would take the user name for a password
        raise FarmError(f"broker {safe_url(url)}: give the password as redis://:PASSWORD@HOST "
                        "or redis://USER:PASSWORD@HOST")
    return url


def celery_url(url: str) -> str:
    """``url`` as Celery's Redis transport takes it: a ``?password=`` moved into ``:PASSWORD@``.

    (The transport fails on a password in the query, and masks only one in
    the address when it prints the URL.)
    """
    parts = urlsplit(check_url(url))
    kept, password = [], None
    for item in parts.query.split("&"):
        name, _, value = item.partition("=")
        if name == "password":
            password = value
        elif item:
            kept.append(item)
    if password is None:
        return url
    if parts.password is not None:
        raise FarmError(f"broker {safe_url(url)}: a password in the address and another in the query")
    host = parts.netloc.rpartition("@")[2]
    user = parts.netloc.rpartition("@")[0] if "@" in parts.netloc else ""
    return urlunsplit((parts.scheme, f"{user}:{password}@{host}", parts.path, "&".join(kept), parts.fragment))


def redis_client(url: str, *, decode: bool = True) -> Any:
    """A redis-py client for ``url`` (decoded strings; bytes with ``decode=False``, for data from other hosts)."""
    import redis

    return redis.Redis.from_url(check_url(url), decode_responses=decode, socket_connect_timeout=5,
                                health_check_interval=30)


def ping(url: str) -> None:
    """Raise :class:`FarmError` unless the broker answers."""
    import redis

    try:
        redis_client(url).ping()
    except redis.RedisError as exc:
        raise FarmError(f"broker {safe_url(url)} unreachable: {mask_secrets(str(exc), url)}") from None


def make_app(url: str, *, visibility_timeout_s: float = VISIBILITY_TIMEOUT_S) -> Any:
    """The farm's Celery app on broker ``url``."""
    from celery import Celery

    app = Celery("melt-farm", broker=celery_url(url), set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        worker_prefetch_multiplier=1,
        worker_concurrency=1,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": visibility_timeout_s},
        task_default_queue="melt.unrouted",
        worker_send_task_events=False,
        worker_enable_remote_control=False,
    )
    from melt.farm.task import register

    register(app)
    return app


def env_url() -> str:
    """The broker URL given to this worker process in its environment."""
    url = os.environ.get(BROKER_ENV)
    if not url:
        raise FarmError(f"{BROKER_ENV} is not set")
    return url


def hide_password_in_title() -> None:
    """Rewrite this process's title (``ps``, ``/proc/PID/cmdline``) with every URL password masked."""
    import sys

    if all(safe_url(a) == a for a in sys.argv if "://" in a):
        return
    try:
        import setproctitle
    except ImportError:  # without it, say how to keep the password out of `ps`
        import warnings

        warnings.warn(f"setproctitle is not installed: pass the broker URL in ${BROKER_ENV} to keep "
                      "its password out of the process list", stacklevel=2)
        return
    args = [safe_url(a) if "://" in a else a for a in sys.argv]
    setproctitle.setproctitle(" ".join(["melt", *args[1:]]))

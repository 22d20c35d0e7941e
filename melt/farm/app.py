"""The Celery app of the farm, and the broker URL handling.

Settings follow Celery's advice for long, non-idempotent-on-the-device work:
the message is acknowledged only after the job (``task_acks_late``), a worker
process that dies mid-job gives its message back
(``task_reject_on_worker_lost``), each worker reserves one message at a time
(``worker_prefetch_multiplier=1``, concurrency 1), and Redis keeps an
unacknowledged message invisible for longer than any job may take
(``visibility_timeout``), after which it is delivered again.

No result backend: each job's record travels back through a Redis list of
its run (:mod:`melt.farm.task`), which a resumed run can still read.

The broker URL may carry a password. It is passed to worker processes in the
environment (``MELT_FARM_BROKER``), never on a command line, and shown only
through :func:`safe_url`.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit, urlunsplit

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


def safe_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for logs, results and messages)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable broker URL>"
    if parts.password is None and "@" not in parts.netloc:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    return urlunsplit((parts.scheme, f"{user}:***@{host}", parts.path, parts.query, parts.fragment))


def check_url(url: str) -> str:
    """``url`` if it is a Redis URL, else a :class:`FarmError` (without the password)."""
    try:
        scheme = urlsplit(url).scheme
    except ValueError:
        scheme = ""
    if scheme not in ("redis", "rediss"):
        raise FarmError(f"broker {safe_url(url)}: expected redis://[:PASSWORD@]HOST:PORT/DB")
    return url


def redis_client(url: str) -> Any:
    """A redis-py client for ``url`` (decoded strings)."""
    import redis

    return redis.Redis.from_url(check_url(url), decode_responses=True, socket_connect_timeout=5,
                                health_check_interval=30)


def ping(url: str) -> None:
    """Raise :class:`FarmError` unless the broker answers."""
    import redis

    try:
        redis_client(url).ping()
    except redis.RedisError as exc:
        raise FarmError(f"broker {safe_url(url)} unreachable: {exc}") from None


def make_app(url: str, *, visibility_timeout_s: float = VISIBILITY_TIMEOUT_S) -> Any:
    """The farm's Celery app on broker ``url``."""
    from celery import Celery

    app = Celery("melt-farm", broker=check_url(url), set_as_current=False)
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

    if not any("@" in a for a in sys.argv):
        return
    try:
        import setproctitle
    except ImportError:  # without it, say how to keep the password out of `ps`
        import warnings

        warnings.warn(f"setproctitle is not installed: pass the broker URL in ${BROKER_ENV} to keep "
                      "its password out of the process list", stacklevel=2)
        return
    args = [safe_url(a) if "://" in a and "@" in a else a for a in sys.argv]
    setproctitle.setproctitle(" ".join(["melt", *args[1:]]))

"""A real Redis server for tests, benchmarks and trying the farm on one machine.

::

    with redis_server(password="s3cret") as url:   # redis://:s3cret@127.0.0.1:PORT/0
        ...

Starts Debian's ``redis-server`` as a child process on a free loopback port,
in its own temporary folder, without persistence; stops it on exit.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator

from melt.errors import MeltError
from melt.virtual.testing import free_port


def redis_available() -> bool:
    return shutil.which("redis-server") is not None


@contextlib.contextmanager
def redis_server(*, password: str | None = None) -> Iterator[str]:
    """Run ``redis-server`` on 127.0.0.1:<free port>; yields its URL (db 0)."""
    import redis

    binary = shutil.which("redis-server")
    if binary is None:
        raise MeltError("redis-server is not installed (Debian: apt-get install redis-server)")
    with tempfile.TemporaryDirectory(prefix="melt-redis-") as tmp:
        port = free_port()
        conf = Path(tmp) / "redis.conf"  # the password in a file, not on the command line
        conf.write_text("\n".join([
            "bind 127.0.0.1", f"port {port}", f"dir {tmp}", 'save ""', "appendonly no",
            "daemonize no", "protected-mode yes", "loglevel warning", f"logfile {tmp}/redis.log",
            *([f"requirepass {password}"] if password else []), ""]))
        proc = subprocess.Popen([binary, str(conf)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        auth = f":{password}@" if password else ""
        url = f"redis://{auth}127.0.0.1:{port}/0"
        try:
            client = redis.Redis.from_url(url)
            deadline = time.monotonic() + 10
            while True:
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise MeltError(f"redis-server did not start on port {port}") from None
                    time.sleep(0.05)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

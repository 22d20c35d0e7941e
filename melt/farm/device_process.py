"""One Celery worker process serving one device: ``python -m melt.farm.device_process``.

Started by ``melt farm worker`` (:mod:`melt.farm.supervisor`), one per
attached device. It consumes only the device's queue ``device.<name>``, with
concurrency 1 and prefetch 1 (one job at a time, none reserved behind it),
in a prefork pool: the job runs in a child process, so a job that kills its
process is seen by this one, which gives the message back to the queue
(``task_reject_on_worker_lost``) for one more delivery.

Arguments: ``DEVICE_CONFIG`` (a device YAML) and the visibility timeout in
seconds. The broker URL comes from ``MELT_FARM_BROKER`` in the environment,
never from the command line, so it is not in any process title; so do the
sources its operator allows and its models folder (:mod:`melt.farm.policy`),
and the farm key (:mod:`melt.farm.signing`).
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from typing import Any

def main(argv: list[str]) -> None:
    from celery.signals import worker_process_shutdown

    from melt.config.loader import validate, read_yaml
    from melt.config.specs import DeviceSpec
    from melt.farm.app import env_url, make_app, queue_name
    from melt.farm.task import close_current, serve_device

    config, visibility = Path(argv[0]), float(argv[1])
    spec = validate(DeviceSpec, read_yaml(config), str(config))
    serve_device(spec)
    app = make_app(env_url(), visibility_timeout_s=visibility)

    @worker_process_shutdown.connect
    def _restore(**_: Any) -> None:  # the pool child restores its device's state on the way out
        close_current()

    app.worker_main([
        "worker", "--queues", queue_name(spec.name), "--concurrency", "1", "--prefetch-multiplier", "1",
        "--pool", "prefork", "--hostname", f"{spec.name}@{socket.gethostname()}",
        "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel", "INFO",
    ])


if __name__ == "__main__":
    main(sys.argv[1:])

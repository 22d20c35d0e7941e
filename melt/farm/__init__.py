"""The device farm: many hosts, each with devices, on Celery with a Redis broker.

- :mod:`melt.farm.app` the Celery app and its settings (one queue per device,
  acks late, prefetch 1, reject on worker lost, a long visibility timeout);
- :mod:`melt.farm.task` the task: the very ``DeviceWorker.execute(job)`` a
  local run calls, with its record sent back compressed;
- :mod:`melt.farm.submit` the pool ``melt run --farm`` uses: submits each job
  to its device's queue and stores each record as it arrives;
- :mod:`melt.farm.supervisor` ``melt farm worker``: one Celery worker process
  per attached device, started and stopped with the device's health;
- :mod:`melt.farm.local` ``melt farm up`` / ``down``: redis-server and a worker per device on this machine;
- :mod:`melt.farm.registry` what workers advertise, queue depths (``melt farm status``);
- :mod:`melt.farm.signing` the farm key and the signed envelope of every message and note;
- :mod:`melt.farm.replay` the message ids a worker host ran (replays refused, redeliveries counted);
- :mod:`melt.farm.policy` what a worker's host agrees to build and run;
- :mod:`melt.farm.notes` the submitter's bounded, verified reading of what workers send back;
- :mod:`melt.farm.heartbeat` heartbeats of running jobs: a dead host's job fails within 30 s.
"""

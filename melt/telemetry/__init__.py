"""On-device sampling, phases, energy, clock offset, pacing and external instruments.

- :mod:`~melt.telemetry.session`: the runner script around each job (``runner.sh``)
- :mod:`~melt.telemetry.channels`: which sensor files a device has
- :mod:`~melt.telemetry.trace`: runner files -> a DataFrame (``trace.parquet``)
- :mod:`~melt.telemetry.phases`: idle / load / prefill / decode windows
- :mod:`~melt.telemetry.energy`: trapezoid integration, unit normalisation (pure)
- :mod:`~melt.telemetry.metrics`: the job's telemetry metrics (pure)
- :mod:`~melt.telemetry.throttle`: throttled intervals (pure)
- :mod:`~melt.telemetry.clock`: host/device clock offset (min-RTT)
- :mod:`~melt.telemetry.cooldown`: cool-down by temperature, battery floor
- :mod:`~melt.telemetry.instruments`: Monsoon and a fake instrument
- :mod:`~melt.telemetry.odpm`, :mod:`~melt.telemetry.tegrastats`: Pixel rails, Jetson
- :mod:`~melt.telemetry.repeat`: adaptive repetition (confidence interval width)

See docs/measurement.md.
"""

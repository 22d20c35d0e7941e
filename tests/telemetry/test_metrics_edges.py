"""Edge cases of the job metrics that short jobs on fast devices meet."""

from __future__ import annotations

import pandas as pd

from melt.telemetry.metrics import job_metrics
from melt.telemetry.phases import Phase, PhasePlan


def test_job_between_two_temperature_readings_still_has_temperatures():
    # temperatures are read every 0.1 s; the job lasts 0.02 s between two readings
    frame = pd.DataFrame({"t_s": [0.0, 0.1, 0.2], "temp_skin_c": [30.0, 31.0, 32.0]})
    plan = PhasePlan([Phase("decode", 0.13, 0.15)], {"decode": 4})
    result = job_metrics(frame, plan, (0.13, 0.15), power_missing="no gauge", skin_zone="skin")
    assert result.metrics["temp_start_c"] == 31.0
    assert result.metrics["temp_end_c"] == 32.0
    assert result.metrics["temp_max_c"] == 32.0
    assert "energy_decode_j" not in result.metrics and result.missing["energy_decode_j"] == "no gauge"


def test_job_after_the_last_reading_uses_the_last_one():
    frame = pd.DataFrame({"t_s": [0.0, 0.1], "temp_skin_c": [30.0, 31.0]})
    plan = PhasePlan([Phase("decode", 0.13, 0.15)], {"decode": 4})
    result = job_metrics(frame, plan, (0.13, 0.15), power_missing="no gauge", skin_zone="skin")
    assert result.metrics["temp_start_c"] == result.metrics["temp_end_c"] == 31.0

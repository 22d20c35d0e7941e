"""Error bars reach as far as a measured energy's own interval, not only the spread of repetitions."""

from __future__ import annotations

import pandas as pd
import pytest

from melt.report.figures import bar_chart


def test_bars_widen_to_the_sensor_interval():
    table = pd.DataFrame({
        "device_label": ["phone", "board"], "framework": ["llama.cpp"] * 2,
        "energy_per_token_decode_j": [0.010, 0.020],
        "energy_per_token_decode_j_ci_low": [0.0099, 0.019], "energy_per_token_decode_j_ci_high": [0.0101, 0.021],
        "energy_per_token_decode_j_u95": [0.0005, 0.0001],  # the phone's gauge is coarse, the board's is not
    })
    fig = bar_chart(table, "energy_per_token_decode_j", "device_label", ["framework"], "J/token")
    err = fig["data"][0]["error_y"]
    scale = 0.010 / fig["data"][0]["y"][0]
    assert err["array"][0] * scale == pytest.approx(0.0005) and err["arrayminus"][0] * scale == pytest.approx(0.0005)
    assert err["array"][1] * scale == pytest.approx(0.001)  # the spread reaches further there

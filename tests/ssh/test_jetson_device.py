"""The Jetson device over SSH: identity, staging, power mode as a state knob, tegrastats, sensors."""

from __future__ import annotations

import time
from pathlib import Path

from melt.config.loader import load_device
from melt.config.specs import StateSpec
from melt.devices.registry import open_device
from melt.devices.state import DeviceState
from melt.parsers.tegrastats import parse_tegrastats
from melt.telemetry.channels import discover_channels


def test_properties_and_health(trusted, device_config: Path) -> None:
    device = open_device(load_device(str(device_config)))
    try:
        p = device.properties()
        assert p["kind"] == "jetson" and p["simulated"] is True
        assert p["model"].startswith("NVIDIA Jetson Orin Nano")
        assert p["power_mode"] == {"mode_name": "15W", "mode_id": 0}
        assert p["jetson_clocks"] == "off"
        assert p["cpu_count"] >= 1
        assert 20 < device.health()["temp_c"] < 90
    finally:
        device.close()


def test_staging_sends_each_file_once(trusted, device_config: Path, tmp_path: Path) -> None:
    device = open_device(load_device(str(device_config)))
    try:
        src = tmp_path / "model;$(id).gguf"
        src.write_bytes(b"x" * 100_000)
        remote = device.stage(src, category="models")
        assert remote == f"{device.workdir()}/models/model;$(id).gguf"
        sent = device.bytes_pushed
        assert device.stage(src, category="models") == remote and device.bytes_pushed == sent
        src.write_bytes(b"y" * 100_000)  # same size, other bytes: sent again
        device.stage(src, category="models")
        assert device.bytes_pushed == sent + 100_000
        assert trusted.host_path(remote).read_bytes() == b"y" * 100_000
    finally:
        device.close()


def test_power_mode_is_set_and_restored(trusted, device_config: Path) -> None:
    device = open_device(load_device(str(device_config)))
    t = device.transport
    cap = "/sys/devices/system/cpu/cpu0/cpufreq/scaling_max_freq"
    try:
        full = int(t.run(["cat", cap]).stdout)
        with DeviceState(t, StateSpec(nvpmodel=1)) as state:
            assert t.run(["nvpmodel", "-q"]).stdout.splitlines() == ["NV Power Mode: 7W", "1"]
            deadline = time.monotonic() + 5  # the model reads the mode at its sysfs rate
            while int(t.run(["cat", cap]).stdout) == full and time.monotonic() < deadline:
                time.sleep(0.1)
            assert int(t.run(["cat", cap]).stdout) == int(full * 0.6)
        assert state.reports[0].before == "0" and state.reports[0].restored
        assert t.run(["nvpmodel", "-q"]).stdout.splitlines()[-1] == "0"
    finally:
        device.close()


def test_tegrastats_prints_real_format_lines(ssh) -> None:
    r = ssh.run(["timeout", "1", "tegrastats", "--interval", "200"], check=False)
    records = parse_tegrastats(r.stdout)
    assert len(records) >= 2
    rec = records[-1]
    assert set(rec["rails_mw"]) == {"VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"}
    assert rec["rails_mw"]["VDD_IN"] > rec["rails_mw"]["VDD_SOC"] > 0
    assert {"cpu", "gpu", "tj"} <= set(rec["temps_c"])
    # the board's own RAM (device_configs/virtual-jetson.yaml: 7620 MB, 1100 MB at rest), not
    # this machine's: used is the baseline plus what its processes hold (sshd, the shells)
    assert rec["ram_total_mb"] == 7620 and 1100 < rec["ram_used_mb"] < 7620
    # it has no GPU or memory-controller model, so it prints no figures for them
    assert "gpu_util_pct" not in rec and "emc_util_pct" not in rec and "GR3D" not in r.stdout


def test_rails_read_a_sagging_bus_and_a_noisy_current(ssh) -> None:
    hw = "/sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon3"
    read = f"for i in $(seq 20); do cat {hw}/in1_input {hw}/curr1_input; sleep 0.06; done"
    idle = [int(x) for x in ssh.run(["sh", "-c", read]).stdout.split()]
    # two busy loops for the two cores the board's model counts, while the rail is read
    busy = ssh.run(["sh", "-c", "(timeout 3 sh -c 'while :; do :; done' &"
                                " timeout 3 sh -c 'while :; do :; done' &); sleep 1; " + read]).stdout
    loaded = [int(x) for x in busy.split()]
    volts, amps = {"idle": idle[0::2], "busy": loaded[0::2]}, {"idle": idle[1::2], "busy": loaded[1::2]}
    # no load reads 5080 mV; the bus sags by I x 45 mOhm, more under load
    assert max(volts["idle"]) < 5080 and sum(volts["busy"]) / 20 < sum(volts["idle"]) / 20
    assert sum(amps["busy"]) > sum(amps["idle"])
    assert len(set(amps["idle"])) > 3  # the current is noisy even at rest, never one flat value


def test_sampler_finds_rails_and_zones(trusted, device_config: Path) -> None:
    spec = load_device(str(device_config))
    device = open_device(spec)
    try:
        plan = discover_channels(device.transport, spec.telemetry)
        cols = plan.columns()
        assert {"rail_vdd_in_v", "rail_vdd_in_a", "temp_tj_therm_c", "temp_cpu_therm_c"} <= set(cols)
        assert plan.power_rails == ("rail_vdd_in",) and "power" not in plan.missing
    finally:
        device.close()

"""Android parsers on real captures: meminfo, getprop, ODPM, thermal, battery, top."""

from __future__ import annotations

import pytest

from melt.parsers.battery import parse_dumpsys_battery, parse_power_supply_uevent, parse_power_supply_uevents
from melt.parsers.getprop import parse_getprop
from melt.parsers.meminfo import parse_dumpsys_meminfo
from melt.parsers.odpm import parse_odpm
from melt.parsers.thermal import parse_dumpsys_thermalservice, parse_thermal_zones, thermalservice_records
from melt.parsers.top import parse_top
from tests.parsers.conftest import read

MEMINFO = [
    ("android_dumpsys_meminfo_settings_a12plus.txt", 5865, "com.android.settings",
     (96354, 2016, 16188, 68605, 181492, 107711, 47237, 55851), (737, 696, 0, 37029, 3608, 56748, 34496, 17629),
     {"Java Heap": (592, 32960), "Code": (15688, 136224), "Private Other": (856, None), "Unknown": (None, 8320)},
     96354, 181492),
    ("android_dumpsys_meminfo_oppo_launcher.txt", 10396, "com.oppo.launcher",
     (148046, 129080, 11872, 0, 128574, 79016, 49557), (69969, 69928, 0, 0, 115200, 72329, 42870),
     {"Java Heap": (10908, None), "Graphics": (43532, None), "System": (7094, None)}, 148046, None),
    ("android_dumpsys_meminfo_systemui_pixel3_a12.txt", 2084, "com.android.systemui",
     (96932, 70819, 12472, 0, 182691, 65087, 32110, 28400), (22219, 22136, 0, 0, 24944, 32280, 23879, 3824),
     {"Graphics": (27095, 27095), "Unknown": (None, 8732)}, 96932, 182691),
    ("android_dumpsys_meminfo_memorylab_dalvik_details.txt", 20602, "com.androidperformance.memorylab",
     (337790, 293788, 18924, 162, 421296, 634109, 428404, 201098), (80860, 80824, 4, 25, 82336, 139028, 129931, 4490),
     {"Java Heap": (69716, 84804), "Unknown": (None, 75752)}, 337790, 421296),
]


@pytest.mark.parametrize("name, pid, process, total, native, summary, pss, rss", MEMINFO)
def test_meminfo(name, pid, process, total, native, summary, pss, rss) -> None:
    [rec] = parse_dumpsys_meminfo(read(name))
    assert (rec["pid"], rec["process"]) == (pid, process)
    assert tuple(rec["rows"]["TOTAL"].values()) == total
    assert tuple(rec["rows"]["Native Heap"].values()) == native
    for label, (s_pss, s_rss) in summary.items():
        assert rec["summary"][label].get("pss_kb") == s_pss, label
        assert rec["summary"][label].get("rss_kb") == s_rss, label
    assert rec.get("total_pss_kb") == pss and rec.get("total_rss_kb") == rss


def test_meminfo_swap_totals() -> None:
    [a12] = parse_dumpsys_meminfo(read("android_dumpsys_meminfo_settings_a12plus.txt"))
    assert a12["total_swap_pss_kb"] == 68605
    [oppo] = parse_dumpsys_meminfo(read("android_dumpsys_meminfo_oppo_launcher.txt"))
    assert oppo["total_swap_kb"] == 0 and "total_rss_kb" not in oppo
    [lab] = parse_dumpsys_meminfo(read("android_dumpsys_meminfo_memorylab_dalvik_details.txt"))
    assert lab["dalvik_details"][".Heap"]["pss_total_kb"] == 48404


def test_getprop_full_dump() -> None:
    props = parse_getprop(read("android_getprop_full_oneplus11_a13.txt"))
    assert len(props) == 1365
    assert props["ro.product.model"] == "CPH2451"
    assert props["ro.product.manufacturer"] == "OnePlus" and props["ro.product.device"] == "OP594DL1"
    assert props["ro.build.version.release"] == "13" and props["ro.build.version.sdk"] == "33"
    assert props["ro.board.platform"] == "kalama" and props["ro.soc.model"] == "SM8550"
    assert props["ro.product.cpu.abi"] == "arm64-v8a" and props["ro.product.system.model"] == "ossi"
    assert props["persist.sys.boot.reason.history"].count("\n") == 3


def test_getprop_single_value() -> None:
    assert parse_getprop(read("android_getprop_single_model_gt_p7510.txt")) == {"ro.product.model": "GT-P7510"}


def test_odpm_pixel6() -> None:
    recs = parse_odpm(read("android_odpm_iio_energy_value_pixel6.txt"))
    assert len(recs) == 16
    assert recs[0] == {"rail": "S10M_VDD_TPU", "energy_uws": 5578756, "timestamp_ms": 349894, "channel": "CH0",
                       "device": "iio:device0", "avg_power_mw": pytest.approx(15.944, abs=1e-3)}
    display = next(r for r in recs if r["rail"] == "VSYS_PWR_DISPLAY")
    assert display["energy_uws"] == 81221665 and display["timestamp_ms"] == 359458
    assert display["avg_power_mw"] == pytest.approx(225.96, abs=0.01)
    cl0 = next(r for r in recs if r["rail"] == "S4M_VDD_CPUCL0")
    assert cl0["avg_power_mw"] == pytest.approx(132.49, abs=0.01)


def test_thermal_zone_paste_listing() -> None:
    zones = parse_thermal_zones(read("thermal_zone_types_paste_msm8939.txt"))
    assert [(z["zone"], z["type"], z["mode"]) for z in zones] == [
        (0, "cpu0-thermal", "disabled"), (1, "cpu1-thermal", "disabled"), (2, "cpu2-thermal", "disabled"),
        (3, "cpu3-thermal", "disabled"), (4, "cpu4567-thermal", "disabled")]
    assert all("temp_c" not in z for z in zones)


def test_thermal_zone_grep_snapshot_of_jetson_sysfs() -> None:
    zones = parse_thermal_zones(read("thermal_zones_grep_orin_nano_sysfs.txt"))
    assert len(zones) == 9
    assert [z["type"] for z in zones[:2]] == ["CPU-therm", "GPU-therm"]
    assert zones[0]["temp_c"] == 42.0 and zones[1]["temp_c"] == 41.218 and zones[8]["temp_c"] == 42.031
    assert all("temp_c" not in z for z in zones[2:5])  # -256000: sensor offline, not a reading


def test_thermal_zones_cat_globs_pair_by_position_and_units() -> None:
    text = ("$ adb shell cat /sys/class/thermal/thermal_zone*/type\nbattery\nxo-therm\ncpu0\n"
            "$ adb shell cat /sys/class/thermal/thermal_zone*/temp\n31\n38000\n415\n")
    zones = parse_thermal_zones(text)
    assert [(z["type"], z["temp_c"]) for z in zones] == [("battery", 31.0), ("xo-therm", 38.0), ("cpu0", 41.5)]


THERMAL = """\
IsStatusOverride: false
ThermalEventListeners:
\tcallbacks: 1
Thermal Status: 1
Cached temperatures:
\tTemperature{mValue=28.0, mType=2, mName=battery, mStatus=0}
HAL Ready: true
HAL connection:
\tThermalHAL 2.0 connected: yes
Current temperatures from HAL:
\tTemperature{mValue=28.5, mType=2, mName=battery, mStatus=0}   \n\tTemperature{mValue=45.1, mType=0, mName=cpu0, mStatus=1}
\tTemperature{mValue=33.0, mType=3, mName=skin, mStatus=0}
Current cooling devices from HAL:
\tCoolingDevice{mValue=0, mType=2, mName=battery}
"""


def test_thermalservice() -> None:
    parsed = parse_dumpsys_thermalservice(THERMAL)
    assert parsed["throttling_status"] == 1
    assert [(s["name"], s["type"], s["value_c"], s["status"]) for s in parsed["sensors"]] == [
        ("battery", 2, 28.5, 0), ("cpu0", 0, 45.1, 1), ("skin", 3, 33.0, 0)]
    assert parsed["cooling_devices"] == [{"name": "battery", "type": 2, "value": 0}]
    assert all(r["throttling_status"] == 1 for r in thermalservice_records(THERMAL))


BATTERY = """\
Current Battery Service state:
  AC powered: false
  USB powered: true
  Wireless powered: false
  Max charging current: 500000
  Max charging voltage: 5000000
  Charge counter: 2819000
  status: 2
  health: 2
  present: true
  level: 85
  scale: 100
  voltage: 4227
  temperature: 280
  technology: Li-ion
"""


def test_dumpsys_battery() -> None:
    rec = parse_dumpsys_battery(BATTERY)
    assert rec["level_pct"] == 85 and rec["scale"] == 100 and rec["voltage_mv"] == 4227
    assert rec["temperature_c"] == 28.0 and rec["status"] == 2 and rec["status_name"] == "charging"
    assert rec["health_name"] == "good" and rec["plugged"] == {"ac": False, "usb": True, "wireless": False}
    assert rec["charge_counter_uah"] == 2819000
    assert "current_now_ua" not in rec
    vendor = parse_dumpsys_battery(BATTERY + "  current now: -350\n")
    assert vendor["current_now_ua"] == -350000 and vendor["current_now_raw"] == -350


def test_power_supply_uevent_with_and_without_prefix() -> None:
    text = ("POWER_SUPPLY_NAME=battery\nPOWER_SUPPLY_STATUS=Discharging\nPOWER_SUPPLY_CAPACITY=57\n"
            "POWER_SUPPLY_VOLTAGE_NOW=3912000\nPOWER_SUPPLY_CURRENT_NOW=-412000\nPOWER_SUPPLY_TEMP=301\n"
            "POWER_SUPPLY_TECHNOLOGY=Li-ion\n")
    rec = parse_power_supply_uevent(text)
    assert rec == {"capacity_pct": 57, "voltage_now_uv": 3912000, "current_now_ua": -412000, "temp_c": 30.1,
                   "status": "Discharging", "name": "battery", "technology": "Li-ion"}
    bare = parse_power_supply_uevent(text.replace("POWER_SUPPLY_", ""))
    assert bare == rec
    two = parse_power_supply_uevents(text + "POWER_SUPPLY_NAME=usb\nPOWER_SUPPLY_ONLINE=1\n")
    assert [s["name"] for s in two] == ["battery", "usb"] and "capacity_pct" not in two[1]


TOP = """\
Tasks: 612 total,   1 running, 611 sleeping,   0 stopped,   0 zombie
  Mem:   5772836k total,  5524076k used,   248760k free,    30276k buffers
800%cpu  31%user   0%nice  31%sys 738%idle   0%iow   0%irq   0%sirq   0%host
  PID USER         PR  NI VIRT  RES  SHR S[%CPU] %MEM     TIME+ ARGS
 5001 shell        20   0  10G 4.1M 3.3M R 31.0   0.0   0:00.04 top -n 1
 1234 u0_a123      10 -10 1.2G 120M  80M S  5.5   2.1  10:00.00 com.example.app
"""


def test_toybox_top() -> None:
    first, second = parse_top(TOP)
    assert first == {"pid": 5001, "user": "shell", "cpu_pct": 31.0, "res_bytes": round(4.1 * 2**20),
                     "name": "top -n 1", "state": "R"}
    assert second["res_bytes"] == 120 * 2**20 and second["name"] == "com.example.app"


def test_top_threads_and_old_toolbox_layout() -> None:
    threads = parse_top("  TID USER PR NI VIRT RES SHR S[%CPU] %MEM TIME+ THREAD PROCESS\n"
                        " 4321 u0_a1 10 -10 2.0G 150M 90M R 55.0 2.5 0:10.00 Jit thread pool com.app\n")
    assert threads == [{"tid": 4321, "row": "thread", "user": "u0_a1", "cpu_pct": 55.0, "res_bytes": 150 * 2**20,
                        "thread": "Jit thread pool", "name": "com.app", "state": "R"}]
    old = parse_top("  PID PR CPU% S  #THR     VSS     RSS PCY UID      Name\n"
                    "    2  0   0% S     1      0K      0K     root     kthreadd\n"
                    " 1234  0  12% S    45 123456K  45678K  fg u0_a12   com.foo\n")
    assert old[0]["name"] == "kthreadd" and old[0]["user"] == "root"
    assert old[1] == {"pid": 1234, "user": "u0_a12", "cpu_pct": 12.0, "res_bytes": 45678 * 1024,
                      "name": "com.foo", "state": "S"}


def test_thermalservice_cached_temperatures_are_labelled_cached() -> None:
    from melt.parsers.thermal import parse_dumpsys_thermalservice

    text = ("IsStatusOverride: false\nThermal Status: 1\nCached temperatures:\n"
            "\tTemperature{mValue=41.5, mType=0, mName=cpu0, mStatus=0}\n"
            "\tTemperature{mValue=33.0, mType=2, mName=battery, mStatus=0}\nHAL Ready: false\n")
    parsed = parse_dumpsys_thermalservice(text)
    assert parsed["source"] == "cached"
    assert [(s["name"], s["value_c"], s.get("cached")) for s in parsed["sensors"]] == [
        ("cpu0", 41.5, True), ("battery", 33.0, True)]
    with_hal = text + ("Current temperatures from HAL:\n"
                       "\tTemperature{mValue=44.0, mType=0, mName=cpu0, mStatus=0}\n")
    live = parse_dumpsys_thermalservice(with_hal)
    assert live["source"] == "hal" and live["sensors"][0]["value_c"] == 44.0
    assert "cached" not in live["sensors"][0]

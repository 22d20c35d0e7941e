"""``top -H`` thread listings and bare ``cat thermal_zone*/temp`` captures."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from melt.cli.main import cli
from melt.parsers import detect_kind
from melt.parsers.thermal import parse_thermal_zones
from melt.parsers.top import parse_top
from tests.parsers.conftest import DATA, read

THREADS = "toybox_top_threads_issue333.txt"


def test_thread_listing_is_detected_and_rows_are_threads() -> None:
    text = read(THREADS)
    assert detect_kind(text) == "toybox-top"
    rows = parse_top(text)
    assert len(rows) == 8
    assert all(r["row"] == "thread" for r in rows)
    second = rows[1]
    assert second["tid"] == 24420
    assert second["thread"] == "Runtime worker"  # a thread name with a space
    assert second["name"] == "com.hello.im"
    assert second["cpu_pct"] == 258.0
    assert second["res_bytes"] == 226 * 1024**2
    assert rows[6]["cpu_pct"] == 86.0


def test_process_listing_rows_are_not_marked_as_threads() -> None:
    text = "Tasks: 2 total\n  PID USER PR NI VIRT RES SHR S[%CPU] %MEM TIME+ ARGS\n 7 root 20 0 1G 4M 2M S 3.0 0.1 0:01 init\n"
    rows = parse_top(text)
    assert rows and "row" not in rows[0]


def test_bare_zone_temperatures_are_detected_and_say_what_they_lack(tmp_path: Path) -> None:
    path = tmp_path / "zones.txt"
    path.write_text("35000\n41200\n-4000\n29800\n")
    assert detect_kind(path.read_text()) == "thermal-zones"
    zones = parse_thermal_zones(path.read_text())
    assert [z["zone"] for z in zones] == [0, 1, 2, 3]
    assert [z["temp_c"] for z in zones] == [35.0, 41.2, -4.0, 29.8]
    assert all("type" not in z for z in zones)
    assert all("unknown" in z["note"] and "thermal_zone10" in z["note"] for z in zones)
    result = CliRunner().invoke(cli, ["parse", str(path)])
    assert result.exit_code == 0, result.output
    assert "kind: thermal-zones" in result.output


def test_bare_integer_detector_does_not_steal_other_texts() -> None:
    assert detect_kind("42\n") is None
    assert detect_kind("1\n2\n3\n") is None  # too small to be millidegrees
    assert detect_kind("35000\nload average 1.0\n") is None
    for name in ("thermal_zone_types_paste_msm8939.txt", "thermal_zones_grep_orin_nano_sysfs.txt"):
        if (DATA / name).exists():
            assert all("note" not in z for z in parse_thermal_zones(read(name)))

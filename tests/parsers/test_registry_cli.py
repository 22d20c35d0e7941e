"""Kind detection, the registry, and the ``melt parse`` command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from melt.cli.main import cli
from melt.errors import ParseError, UnknownNameError
from melt.parsers import KINDS, detect_kind, parse
from tests.parsers.conftest import DATA, captures, read

EXPECTED_KIND = {
    "android_dumpsys_meminfo": "dumpsys-meminfo",
    "perplexity_": "llama-perplexity",
    "android_getprop": "getprop",
    "android_odpm": "odpm-energy",
    "llamabench_": "llama-bench",
    "llamacpp_": "llamacpp-timings",
    "melt_dummy_file.llamacpp": "llamacpp-timings",
    "melt_dummy_file.mlc": "mlc-stats",
    "mlc_": "mlc-stats",
    "tegrastats_": "tegrastats",
    "thermal_zone": "thermal-zones",
    "toybox_top": "toybox-top",
}


def _expected(name: str) -> str:
    return next(kind for prefix, kind in EXPECTED_KIND.items() if name.startswith(prefix))


@pytest.mark.parametrize("name", captures())
def test_every_fixture_is_detected(name: str) -> None:
    assert detect_kind(read(name)) == _expected(name)


def test_inline_kinds_are_detected() -> None:
    assert detect_kind("Current Battery Service state:\n  level: 50\n") == "dumpsys-battery"
    assert detect_kind("POWER_SUPPLY_NAME=battery\nPOWER_SUPPLY_CAPACITY=5\n") == "power-supply-uevent"
    assert detect_kind("Current temperatures from HAL:\n\tTemperature{mValue=1.0, mType=0, mName=a, mStatus=0}\n") \
        == "dumpsys-thermalservice"
    assert detect_kind("  PID USER PR NI VIRT RES SHR S[%CPU] %MEM TIME+ ARGS\n") == "toybox-top"


def test_parse_errors() -> None:
    with pytest.raises(ParseError, match="could not recognise"):
        parse("hello world")
    with pytest.raises(UnknownNameError, match="Did you mean: tegrastats"):
        parse("x", "tegrastat")
    assert parse("hello", "tegrastats") == ("tegrastats", [])
    assert set(KINDS) >= {"llamacpp-timings", "llama-bench", "mlc-stats", "tegrastats", "dumpsys-battery",
                          "power-supply-uevent", "dumpsys-thermalservice", "thermal-zones", "toybox-top",
                          "dumpsys-meminfo", "getprop", "odpm-energy"}


def test_cli_json_output() -> None:
    result = CliRunner().invoke(cli, ["parse", str(DATA / "tegrastats_tx1_l4t28_legacy.txt"), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["kind"] == "tegrastats" and len(out["records"]) == 2
    assert out["records"][1]["cpu_freq_mhz"] == [1734] * 4


def test_cli_explicit_kind_and_table(tmp_path: Path) -> None:
    path = DATA / "llamabench_md_jetson_nano_b5043_gemma3.txt"
    result = CliRunner().invoke(cli, ["parse", str(path), "--kind", "llama-bench"])
    assert result.exit_code == 0, result.output
    assert "llama-bench" in result.output and "116.49" in result.output
    result = CliRunner().invoke(cli, ["parse", str(DATA / "android_dumpsys_meminfo_oppo_launcher.txt")])
    assert result.exit_code == 0 and "total_pss_kb: 148046" in result.output


def test_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from melt.cli.main import main

    junk = tmp_path / "junk.txt"
    junk.write_text("nothing to see\n")
    for args, message in ([str(tmp_path / "missing.log")], "cannot read"), ([str(junk)], "could not recognise"), \
            ([str(junk), "--kind", "tegrastat"], "Did you mean"):
        with pytest.raises(SystemExit) as exit_info:
            main(["parse", *args])
        assert exit_info.value.code == 1
        err = capsys.readouterr().err
        assert err.startswith("Error: ") and message in err and err.count("\n") == 1


def test_cli_help_lists_kinds() -> None:
    result = CliRunner().invoke(cli, ["parse", "--help"])
    assert result.exit_code == 0
    for kind in KINDS:
        assert kind in result.output

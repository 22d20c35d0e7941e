"""Every parser, fed random and mutated text, never raises and stays JSON-serialisable."""

from __future__ import annotations

import json
import re
from typing import Any, Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from melt.parsers import KINDS, detect_kind, parse
from melt.parsers._num import to_float
from melt.parsers.battery import parse_dumpsys_battery, parse_power_supply_uevent
from melt.parsers.getprop import parse_getprop
from melt.parsers.llama_bench import printed_rows
from melt.parsers.tegrastats import parse_tegrastats_line
from melt.parsers.thermal import parse_dumpsys_thermalservice
from tests.parsers.conftest import captures, read

# A seed capture per kind (kept small so mutations stay quick).
SEEDS: dict[str, list[str]] = {
    "llamacpp-timings": ["llamacpp_common_perf_print_pr17382.txt"],
    "llama-bench": ["llamabench_md_jetson_nano_b5043_gemma3.txt", "llamabench_csv_b5163_readme.csv",
                    "llamabench_json_b5163_readme.json", "llamabench_md_pr2626_early_columns.txt"],
    "mlc-stats": ["mlc_stats_verbose_pr1007.txt", "mlc_jetson_benchmark_issue412.txt",
                  "mlc_per_token_decoding_pr612.txt", "mlc_chat_cli_session_steamdeck_vulkan.txt"],
    "tegrastats": ["tegrastats_tx2_mixed_root_nonroot.log", "tegrastats_tx1_l4t28_legacy.txt"],
    "dumpsys-meminfo": ["android_dumpsys_meminfo_settings_a12plus.txt"],
    "getprop": ["android_getprop_single_model_gt_p7510.txt"],
    "odpm-energy": ["android_odpm_iio_energy_value_pixel6.txt"],
    "thermal-zones": ["thermal_zone_types_paste_msm8939.txt", "thermal_zones_grep_orin_nano_sysfs.txt"],
}
INLINE = {
    "dumpsys-battery": "Current Battery Service state:\n  AC powered: false\n  USB powered: true\n"
                       "  status: 2\n  health: 2\n  level: 85\n  scale: 100\n  voltage: 4227\n"
                       "  temperature: 280\n  current now: -350\n",
    "power-supply-uevent": "POWER_SUPPLY_NAME=battery\nPOWER_SUPPLY_CAPACITY=57\nPOWER_SUPPLY_TEMP=301\n"
                           "POWER_SUPPLY_VOLTAGE_NOW=3.912\nPOWER_SUPPLY_CURRENT_NOW=-412000\n",
    "dumpsys-thermalservice": "Thermal Status: 0\nCurrent temperatures from HAL:\n"
                              "\tTemperature{mValue=28.5, mType=2, mName=battery, mStatus=0}\n",
    "toybox-top": "  PID USER PR NI VIRT RES SHR S[%CPU] %MEM TIME+ ARGS\n"
                  " 5001 shell 20 0 10G 4.1M 3.3M R 31.0 0.0 0:00.04 top -n 1\n",
}
# Records whose rates are not printed: a parser must leave them out, never fill in a number.
NO_RATES = {
    "llamacpp-timings": "llama_print_timings: prompt eval time =   818.94 ms /     9 tokens (   90.99 ms per token)\n"
                        "llama_print_timings:        eval time =  4882.82 ms /    63 runs   (   77.50 ms per run)\n",
    "llama-bench": '{"build_commit": "3c0d25c", "model_type": "llama 7B Q4_0", "n_prompt": 512, "n_gen": 0}\n'
                   '{"build_commit": "3c0d25c", "model_type": "llama 7B Q4_0", "n_prompt": 0, "n_gen": 128, '
                   '"avg_ts": "", "stddev_ts": null}\n',
}
CORPUS = [read(n) for names in SEEDS.values() for n in names] + list(INLINE.values()) + list(NO_RATES.values())
#: a text with every 0 digit replaced: a rate of 0 read from it can only be made up
NO_ZERO = str.maketrans("0", "7")
JUNK = st.sampled_from(["", " ", "\t", "|", "||", "±", "@", "%", "[", "]", "{", "}", "(", ")", ",", ":", "=",
                        "'", '"', "-1", "0", "1e999", "nan", "NaN", "∞", "\x00", "\r", "---", "mW", "MB",
                        "off", "tok/s", "ms", "/", "\\", "[i: 3]", "CH1(T=5)[X], ", "TOTAL:", "pp512 @ d"])
FUNCTIONS: list[Callable[[str], Any]] = [
    *KINDS.values(), parse_tegrastats_line, parse_getprop, parse_dumpsys_battery,
    parse_power_supply_uevent, parse_dumpsys_thermalservice, detect_kind, printed_rows,
]
QUICK = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def mutated(draw: st.DrawFn) -> str:
    """A real capture cut, with lines duplicated/dropped/swapped, digits changed and junk inserted."""
    lines = draw(st.sampled_from(CORPUS)).splitlines()[:80]
    for _ in range(draw(st.integers(0, 6))):
        if not lines:
            break
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.sampled_from(["cut", "dup", "drop", "swap", "digits", "junk", "trunc"]))
        line = lines[i]
        if op == "cut":
            lines = lines[: i + 1]
        elif op == "dup":
            lines.insert(i, line)
        elif op == "drop":
            del lines[i]
        elif op == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "digits":
            lines[i] = "".join(draw(st.sampled_from("0123456789,.-")) if c.isdigit() and draw(st.booleans())
                               else c for c in line)
        elif op == "junk":
            pos = draw(st.integers(0, len(line)))
            lines[i] = line[:pos] + draw(JUNK) + line[pos:]
        else:
            lines[i] = line[: draw(st.integers(0, len(line)))]
    text = "\n".join(lines)
    return text.translate(NO_ZERO) if draw(st.booleans()) else text


# Every number as printed (a comma may be the decimal separator, JSON may use an exponent).
_PRINTED = re.compile(r"[-+]?\d+(?:[.,]\d+)?(?:[eE][-+]?\d+)?")


def printed_numbers(text: str) -> set[float]:
    return {v for v in map(to_float, _PRINTED.findall(text)) if v is not None}


def _check(text: str) -> int:
    """Run every parser on ``text``; the number of token rates it checked."""
    rates = 0
    numbers: set[float] | None = None
    for fn in FUNCTIONS:
        out = fn(text)
        json.dumps(out, allow_nan=False)
        if isinstance(out, list):
            assert all(isinstance(r, dict) for r in out)
            for record in out:
                for key, value in record.items():
                    if not key.endswith("_tps"):
                        continue
                    # a rate is read from the text, never made up (no 0 for a missing one)
                    numbers = printed_numbers(text) if numbers is None else numbers
                    assert value in numbers, (fn.__name__, key, value)
                    rates += 1
    return rates


@QUICK
@given(st.text(max_size=400))
def test_random_text_never_raises(text: str) -> None:
    _check(text)


@QUICK
@given(st.lists(st.one_of(JUNK, st.text(alphabet="0123456789 .,%@/[]|:=-abcxyzCPURAMtok", max_size=30)),
                max_size=30).map(" ".join))
def test_structured_junk_never_raises(text: str) -> None:
    _check(text)


@QUICK
@given(mutated())
def test_mutated_captures_never_raise(text: str) -> None:
    _check(text)


def test_every_fixture_parses_cleanly_with_every_parser() -> None:
    names, rates = captures(), 0
    assert len(names) > 30
    for name in names:
        text = read(name)
        if len(text) > 200_000:
            text = text[:200_000]
        rates += _check(text) + _check(text.translate(NO_ZERO))
        kind = detect_kind(text)
        if kind:
            json.dumps(parse(text, kind), allow_nan=False)
    assert rates >= 80  # the rate guard above applies to the real captures, not just in principle


def test_rates_that_are_not_printed_are_left_out() -> None:
    for kind, text in NO_RATES.items():
        for variant in (text, text.translate(NO_ZERO)):
            assert _check(variant) == 0, kind
            records = parse(variant, kind)[1]
            assert records and not any(k.endswith("_tps") for r in records for k in r), (kind, records)

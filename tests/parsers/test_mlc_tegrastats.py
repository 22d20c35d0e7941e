"""MLC-LLM statistics and tegrastats on real captures (values from their sources)."""

from __future__ import annotations

import pytest

from melt.parsers.mlc import parse_mlc_stats
from melt.parsers.tegrastats import parse_tegrastats, parse_tegrastats_line
from tests.parsers.conftest import read


def test_mlc_chat_cli_session() -> None:
    assert parse_mlc_stats(read("mlc_chat_cli_session_steamdeck_vulkan.txt")) == [
        {"prefill_tps": 48.3, "decode_tps": 13.2}]


def test_mlc_old_encode_wording_and_backticks() -> None:
    text = "`encode: 37.1 tok/s, decode: 19.4 tok/s`\n"
    assert parse_mlc_stats(text) == [{"prefill_tps": 37.1, "decode_tps": 19.4}]


def test_mlc_verbose_form() -> None:
    one, verbose = parse_mlc_stats(read("mlc_stats_verbose_pr1007.txt"))
    assert one == {"prefill_tps": 216.0, "decode_tps": 107.5}
    assert verbose == {"prefill_tps": 216.6, "prompt_tokens": 15, "decode_tps": 107.5, "gen_tokens": 354}


def test_mlc_metrics_then_stats() -> None:
    metrics, stats = parse_mlc_stats(read("mlc_metrics_and_stats_eagle_pr2834.txt"))
    assert metrics["gen_tokens"] == 73 and abs(metrics["decode_tps"] - 5.658) < 1e-3
    assert stats == {"prefill_tps": 1.0, "decode_tps": 5.4}


def test_mlc_jetson_benchmark_lines() -> None:
    with_io, without_io = parse_mlc_stats(read("mlc_jetson_benchmark_issue412.txt"))
    assert with_io["prompt_tokens"] == 16 and with_io["gen_tokens"] == 128
    assert with_io["prefill_tps"] == 197.0 and with_io["decode_tps"] == 19.3
    assert with_io["prefill_ms"] == pytest.approx(81.0)
    assert "prompt_tokens" not in without_io and without_io["decode_tps"] == 42.9


def test_mlc_per_token_log_keeps_last_running_rate() -> None:
    [rec] = parse_mlc_stats(read("mlc_per_token_decoding_pr612.txt"))
    assert rec["decode_tps"] == 117.217 and rec["gen_tokens"] == 5


def test_mlc_engine_json_usage() -> None:
    text = ('{"usage": {"prompt_tokens": 9, "completion_tokens": 100, "extra": '
            '{"prefill_tokens_per_s": 100.5, "decode_tokens_per_s": 30.2, "ttft_s": 0.09}}}')
    [rec] = parse_mlc_stats(text)
    assert rec == {"prompt_tokens": 9, "gen_tokens": 100, "prefill_tps": 100.5, "decode_tps": 30.2,
                   "ttft_ms": pytest.approx(90.0)}


def test_mlc_profiling_log_without_stats() -> None:
    assert parse_mlc_stats(read("melt_dummy_file.mlc.log")) == []


# (file, number of samples, index, expected subset)
TEGRA = [
    ("tegrastats_agx_orin64.log", 15, 0, {
        "timestamp": "07-21-2025 16:33:42", "ram_used_mb": 17953, "ram_total_mb": 62841,
        "swap_used_mb": 0, "swap_total_mb": 31420,
        "cpu_util_pct": [7, 31, 7, 42, 4, 5, 6, 1, None, None, None, None],
        "cpu_freq_mhz": [1728, 1036, 1036, 1036, 1420, 729, 729, 729, None, None, None, None],
        "emc_util_pct": 12, "emc_freq_mhz": 204, "gpu_util_pct": 39, "gpu_gpc_freq_mhz": [305, 0],
        "rails_mw": {"VDD_GPU_SOC": 2798, "VDD_CPU_CV": 799, "VIN_SYS_5V0": 3315},
        "temps_c": {"cpu": 43.906, "soc2": 40.406, "soc0": 41.187, "gpu": 40.093, "tj": 43.906, "soc1": 40.437}}),
    ("tegrastats_agx_orin64.log", 15, 11, {
        "rails_mw": {"VDD_GPU_SOC": 2399, "VDD_CPU_CV": 399, "VIN_SYS_5V0": 2712},
        "rails_avg_mw": {"VDD_GPU_SOC": 2765, "VDD_CPU_CV": 732, "VIN_SYS_5V0": 3131}, "gpu_util_pct": 0}),
    ("tegrastats_xavier_nx_jp5.log", 20, 19, {
        "timestamp": "10-01-2025 20:06:15", "ram_used_mb": 5453, "cpu_util_pct": [100, 100, 100, 100, None, None],
        "rails_mw": {"VDD_IN": 13791, "VDD_CPU_GPU_CV": 7697, "VDD_SOC": 1984},
        "rails_avg_mw": {"VDD_IN": 8984, "VDD_CPU_GPU_CV": 4130, "VDD_SOC": 1552}}),
    ("tegrastats_xavier_nx_jp46_15w.log", 3, 0, {
        "ram_used_mb": 1748, "ram_total_mb": 7772, "swap_total_mb": 3886, "emc_util_pct": 0, "gpu_util_pct": 99,
        "rails_mw": {"VDD_IN": 12221, "VDD_CPU_GPU_CV": 8812, "VDD_SOC": 1333},
        "temps_c": {"AO": 50.5, "GPU": 53, "PMIC": 100, "AUX": 51, "CPU": 53, "thermal": 52.35}}),
    ("tegrastats_nano_jp4.txt", 30, 29, {
        "ram_used_mb": 1762, "cpu_util_pct": [37, 0, 3, 0], "cpu_freq_mhz": [204, 204, 204, 204],
        "emc_util_pct": 7, "emc_freq_mhz": 1600, "gpu_util_pct": 99, "gpu_freq_mhz": 921,
        "rails_mw": {"POM_5V_IN": 5206, "POM_5V_GPU": 3087, "POM_5V_CPU": 179},
        "rails_avg_mw": {"POM_5V_IN": 2702, "POM_5V_GPU": 279, "POM_5V_CPU": 971}}),
    ("tegrastats_nano_jp46_pom_gpu_first.log", 3, 0, {
        "swap_used_mb": 43, "swap_total_mb": 1982,
        "rails_mw": {"POM_5V_GPU": 8949, "POM_5V_IN": 3227, "POM_5V_CPU": 3148}}),
    ("tegrastats_tx2_l4t28_sudo.log", 2, 1, {
        "ram_used_mb": 288, "ram_total_mb": 7860, "cpu_util_pct": [45, None, None, 39, 43, 42],
        "emc_util_pct": 2, "emc_freq_mhz": 1600,
        "rails_mw": {"VDD_SYS_GPU": 192, "VDD_SYS_SOC": 529, "VDD_4V0_WIFI": 38, "VDD_IN": 3445,
                     "VDD_SYS_CPU": 1060, "VDD_SYS_DDR": 883},
        "temps_c": {"PLL": 29.5, "MCPU": 29.5, "PMIC": 100, "Tboard": 26, "GPU": 27.5, "BCPU": 29.5,
                    "thermal": 28.7, "Tdiode": 25}}),
    ("tegrastats_tx2_mixed_root_nonroot.log", 8, 3, {
        "emc_util_pct": 7, "emc_freq_mhz": 1600, "gpu_util_pct": 18, "gpu_freq_mhz": 1134,
        "rails_avg_mw": {"VDD_IN": 3717, "VDD_CPU": 742, "VDD_GPU": 371, "VDD_SOC": 650, "VDD_WIFI": 0,
                         "VDD_DDR": 881}}),
    ("tegrastats_tx1_l4t28_legacy.txt", 2, 1, {
        "ram_used_mb": 3607, "ram_total_mb": 3983, "swap_used_mb": 873, "swap_total_mb": 8192,
        "cpu_util_pct": [17, 11, 65, 0], "cpu_freq_mhz": [1734] * 4, "emc_util_pct": 1, "emc_freq_mhz": 1600,
        "gpu_util_pct": 39, "gpu_freq_mhz": 76}),
]


@pytest.mark.parametrize("name, count, index, expected", TEGRA)
def test_tegrastats_captures(name: str, count: int, index: int, expected: dict) -> None:
    recs = parse_tegrastats(read(name))
    assert len(recs) == count
    rec = recs[index]
    for key, value in expected.items():
        assert rec[key] == value, key


def test_tegrastats_absent_fields_are_missing_not_zero() -> None:
    norails = parse_tegrastats(read("tegrastats_xavier_nx_jp46_20w_norails.log"))
    assert len(norails) == 3 and all("ram_used_mb" in r for r in norails)
    assert all("rails_mw" not in r and "rails_avg_mw" not in r for r in norails)
    nonroot = parse_tegrastats(read("tegrastats_tx2_mixed_root_nonroot.log"))[0]
    assert "swap_used_mb" not in nonroot and "emc_util_pct" not in nonroot and "gpu_util_pct" not in nonroot
    tx1 = parse_tegrastats(read("tegrastats_tx1_l4t28_legacy.txt"))[0]
    assert "temps_c" not in tx1 and "rails_mw" not in tx1
    sudo = parse_tegrastats(read("tegrastats_tx2_l4t28_sudo.log"))[0]
    assert "gpu_util_pct" not in sudo  # "GR3D_FREQ @0" prints no load


def test_tegrastats_line_variant() -> None:
    assert parse_tegrastats_line("nvidia@linux:~$ sudo tegrastats") is None
    rec = parse_tegrastats_line(
        "RAM 1500/3956MB (lfb 1x2MB) SWAP 0/1978MB (cached 0MB) IRAM 0/252kB(lfb 252kB) "
        "CPU [3%@102,off,off,1%@102] EMC_FREQ 0%@1600 GR3D_FREQ 0%@76 APE 25 "
        "GPU 0/0 CPU 311/311 SOC 1243/1243 CV 0/0 VDDRQ 155/155 SYS5V 2250/2250 CV0@-256C")
    assert rec is not None
    assert rec["rails_mw"] == {"GPU": 0, "CPU": 311, "SOC": 1243, "CV": 0, "VDDRQ": 155, "SYS5V": 2250}
    assert rec["temps_c"] == {"CV0": None}
    assert rec["cpu_util_pct"] == [3, None, None, 1]

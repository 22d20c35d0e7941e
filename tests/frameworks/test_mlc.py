"""The MLC-LLM driver: recipe, params, recorded real outputs, the stand-in."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from melt.errors import BuildError, ConfigError, JobFailed
from melt.frameworks.mlc.driver import MlcLlm
from melt.frameworks.mlc.recipe import load_recipe
from melt.frameworks.registry import get_framework

PARSERS = Path(__file__).resolve().parents[1] / "data" / "parsers"


def test_registered_by_name():
    assert isinstance(get_framework("mlc-llm"), MlcLlm)


def test_recipe_profiles_and_compile_steps():
    recipe = load_recipe()
    assert {"android", "iphone", "cuda", "host", "stand-in"} <= set(recipe.profiles)
    steps = recipe.compile_commands("android", src="hf/gemma", quant="q4f16_1", out="dist/g", template="gemma")
    assert steps[0][:3] == ["mlc_llm", "convert_weight", "hf/gemma"]
    assert steps[-1][-3:] == ["android", "-o", "dist/g/model-android.so"]


@pytest.mark.parametrize("profile", ["android", "iphone", "cuda", "host"])
def test_missing_toolchain_names_what_to_install(profile, monkeypatch):
    monkeypatch.delenv("ANDROID_NDK", raising=False)
    with pytest.raises(BuildError) as err:
        MlcLlm().build(profile)
    text = str(err.value)
    assert "mlc_llm" in text and "not on PyPI" in text  # the MLC wheels come from MLC, not PyPI
    if profile == "android":
        assert "ANDROID_NDK" in text


def test_recorded_real_stats_parse_to_their_numbers():
    """The Steam Deck session (mlc_chat_cli, /stats): prefill 48.3, decode 13.2 tok/s."""
    text = (PARSERS / "mlc_chat_cli_session_steamdeck_vulkan.txt").read_text()
    assert MlcLlm().parse_metrics("generate", {}, text, "", 0) == {"prefill_tps": 48.3, "decode_tps": 13.2}


def test_no_stats_is_a_failure_with_the_reason():
    with pytest.raises(JobFailed, match="no /stats line"):
        MlcLlm().parse_metrics("generate", {}, "Loading model...\nLoading finished\n", "", 0)
    with pytest.raises(JobFailed, match="exited with code 3"):
        MlcLlm().parse_metrics("generate", {}, "", "Cannot find model: x\n", 3)


def test_params_the_cli_cannot_honour_are_refused():
    mlc = MlcLlm()
    with pytest.raises(ConfigError, match="one line"):
        mlc.validate_params("generate", {"prompt": "two\nlines"})
    with pytest.raises(ConfigError, match="command"):
        mlc.validate_params("generate", {"prompt": "/exit"})
    with pytest.raises(ConfigError, match="threads"):
        mlc.validate_params("generate", {"prompt": "hi", "threads": 4})
    with pytest.raises(ConfigError, match="temperature"):
        mlc.validate_params("generate", {"prompt": "hi", "temperature": 0.7})
    ok = mlc.validate_params("generate", {"prompt": "hi", "n_predict": 8, "ctx_size": 512, "seed": 42,
                                          "temperature": 0.0})
    assert ok["n_predict"] == 8 and ok["device"] == "auto"


def test_invocation_passes_hostile_text_as_one_argument():
    prompt = "a; rm -rf / $(touch x) `id` 'q' \"d\""
    inv = MlcLlm().invocation("generate", {"prompt": prompt, "n_predict": 4}, bin_dir="/data/b", model_path="/m")
    assert inv.argv == ("sh", "/data/b/mlc-run", "/data/b/mlc_chat_cli", "/m", prompt, "4", "auto")


@pytest.mark.slow
def test_stand_in_prints_mlc_format_with_llama_cpp_rates(tmp_path, llamacpp_build, tiny_model):
    """The stand-in's /stats numbers are llama-completion's own, cut to MLC's one decimal."""
    mlc = MlcLlm()
    build = mlc.build("stand-in")
    assert build.provenance["stand_in"] is True
    assert set(mlc.binaries_for("generate")) == {"mlc_chat_cli", "mlc-run", "llama-completion"}
    prompt = "Once upon a time; $(echo pwned)"
    inv = mlc.invocation("generate", {"prompt": prompt, "n_predict": 12}, bin_dir=str(build.bin_dir),
                         model_path=str(tiny_model))
    done = subprocess.run(inv.argv, capture_output=True, text=True, errors="replace", timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-400:]
    assert f"[INST]: {prompt}" in done.stdout  # the prompt arrived intact, nothing ran
    assert not (tmp_path / "pwned").exists()
    metrics = mlc.parse_metrics("generate", {}, done.stdout, done.stderr, 0)
    stats = [ln for ln in done.stdout.splitlines() if ln.startswith("prefill:")]
    assert len(stats) == 1 and stats[0].endswith("tok/s")
    # the same job through llama-completion directly runs at a comparable rate
    assert metrics["decode_tps"] > 0 and metrics["prefill_tps"] > 0
    assert all(len(str(v).split(".")[-1]) <= 1 for v in metrics.values())  # MLC prints one decimal


@pytest.mark.parametrize("kind, abi, build_profile, expected", [
    ("android", "arm64-v8a", "auto", "stand-in/arm64"),     # the virtual phone's ABI: the arm64 cross build
    ("android", "x86_64", "auto", "stand-in/host"),         # a phone of this machine's ABI
    ("local", None, "auto", "stand-in/host"),
    ("android", "arm64-v8a", "arm64-baseline", "stand-in/arm64-baseline"),  # the device config names it
])
def test_the_stand_in_follows_the_device(kind, abi, build_profile, expected, monkeypatch):
    monkeypatch.delenv("ANDROID_NDK", raising=False)
    monkeypatch.delenv("ANDROID_NDK_HOME", raising=False)
    monkeypatch.setattr("melt.devices.abi.host_abi", lambda: "x86_64")
    assert MlcLlm().device_profile("stand-in", kind, abi, build_profile) == expected


def test_named_and_real_profiles_are_left_as_they_are():
    mlc = MlcLlm()
    assert mlc.device_profile("stand-in/host", "android", "arm64-v8a") == "stand-in/host"
    assert mlc.device_profile("android", "android", "arm64-v8a") == "android"


def test_only_a_stand_in_takes_a_llama_cpp_profile():
    with pytest.raises(BuildError, match=r"only a stand-in profile names a llama.cpp profile"):
        MlcLlm().build("cuda/arm64")


def test_melt_build_of_the_stand_in_says_what_it_is_and_its_llama_cpp_build(llamacpp_build):
    from tests.helpers import melt

    out = melt("build", "--framework", "mlc-llm", "--profile", "stand-in/host")
    assert out.returncode == 0, out.stderr
    assert "not MLC-LLM" in out.stdout.splitlines()[0]
    commit = llamacpp_build.provenance["llama_cpp_commit"]
    assert f"  commit    {commit} " in out.stdout and "?" not in out.stdout, out.stdout

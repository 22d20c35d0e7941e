"""The recipe file validates, and missing toolchains are one clear line."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from melt.errors import BuildError, ConfigError, UnknownNameError
from melt.frameworks.llamacpp.build import build_llamacpp, check_toolchain
from melt.frameworks.llamacpp.recipe import load_recipe


def test_recipe_profiles_and_host_flags():
    recipe = load_recipe()
    assert set(recipe.profiles) == {"host", "android-arm64", "linux-aarch64", "jetson-cuda"}
    flags = recipe.flags_for("host")
    assert flags["GGML_NATIVE"] == "OFF"
    assert flags["BUILD_SHARED_LIBS"] == "OFF"
    assert flags["CMAKE_BUILD_TYPE"] == "Release"
    assert flags["LLAMA_BUILD_TESTS"] == "OFF" and flags["LLAMA_BUILD_SERVER"] == "ON"
    host = recipe.profile("host")
    assert set(host.targets) == {"llama-bench", "llama-completion", "llama-server", "llama-quantize"}
    assert recipe.source.default == "pypi" and recipe.source.pypi.subdir == "vendor/llama.cpp"
    assert all(p.is_file() for p in recipe.patch_paths())


def test_cross_profiles_carry_their_toolchains():
    recipe = load_recipe()
    android = recipe.profile("android-arm64")
    assert android.toolchain_file == "$ANDROID_NDK/build/cmake/android.toolchain.cmake"
    assert recipe.flags_for("android-arm64")["ANDROID_ABI"] == "arm64-v8a"
    assert recipe.flags_for("android-arm64")["ANDROID_PLATFORM"] == "android-28"
    assert recipe.flags_for("linux-aarch64")["CMAKE_CXX_COMPILER"] == "aarch64-linux-gnu-g++"
    assert recipe.flags_for("jetson-cuda")["GGML_CUDA"] == "ON"


def test_unknown_profile_suggests():
    with pytest.raises(UnknownNameError, match="Did you mean: host"):
        load_recipe().profile("hots")


def test_missing_ndk_is_a_clear_build_error(monkeypatch, tmp_path):
    monkeypatch.delenv("ANDROID_NDK", raising=False)
    monkeypatch.setenv("MELT_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(BuildError) as err:
        build_llamacpp("android-arm64")
    message = str(err.value)
    assert "\n" not in message
    assert "Android NDK" in message and "ANDROID_NDK is not set" in message
    assert "sdkmanager" in message  # says how to get it
    assert not (tmp_path / "cache").exists()  # failed before downloading anything


def test_ndk_folder_without_toolchain_file(monkeypatch, tmp_path):
    monkeypatch.setenv("ANDROID_NDK", str(tmp_path))
    with pytest.raises(BuildError, match="has no build/cmake/android.toolchain.cmake"):
        check_toolchain(load_recipe().profile("android-arm64"))


def test_missing_cross_compiler(monkeypatch, tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "cmake").symlink_to(shutil.which("cmake"))
    monkeypatch.setenv("PATH", str(bindir))
    with pytest.raises(BuildError, match=r"aarch64-linux-gnu-g\+\+\) is not on PATH: apt-get install"):
        check_toolchain(load_recipe().profile("linux-aarch64"))


def test_missing_nvcc(monkeypatch, tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "cmake").symlink_to(shutil.which("cmake"))
    monkeypatch.setenv("PATH", str(bindir))
    with pytest.raises(BuildError, match=r"nvcc\) is not on PATH"):
        check_toolchain(load_recipe().profile("jetson-cuda"))


def test_malformed_recipe_names_the_field(tmp_path: Path):
    bad = tmp_path / "recipe.yaml"
    bad.write_text(
        "name: llama.cpp\nsource: {default: pypi}\nbinaries: {bench: [llama-bench]}\n"
        "profiles: {host: {flags: {}, targets: [llama-cli]}}\n"
    )
    with pytest.raises(ConfigError) as err:
        load_recipe(bad)
    text = str(err.value)
    assert "source" in text and "default source 'pypi'" in text

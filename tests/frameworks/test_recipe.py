"""The recipe file validates, and missing toolchains are one clear line."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from melt.errors import BuildError, ConfigError, UnknownNameError
from melt.frameworks.llamacpp.build import build_llamacpp, check_toolchain
from melt.frameworks.llamacpp.recipe import load_recipe


def test_recipe_profiles_and_host_flags():
    recipe = load_recipe()
    assert set(recipe.profiles) == {"host", "android-arm64", "arm64", "arm64-baseline",
                                    "linux-aarch64", "jetson-cuda"}
    flags = recipe.flags_for("host")
    assert flags["GGML_NATIVE"] == "OFF"
    assert flags["BUILD_SHARED_LIBS"] == "OFF"
    assert flags["CMAKE_BUILD_TYPE"] == "Release"
    assert flags["LLAMA_BUILD_TESTS"] == "OFF" and flags["LLAMA_BUILD_SERVER"] == "ON"
    host = recipe.profile("host")
    assert set(host.targets) == {"llama-bench", "llama-completion", "llama-server", "llama-perplexity",
                                 "llama-quantize"}
    assert recipe.source.default == "pypi" and recipe.source.pypi.subdir == "vendor/llama.cpp"
    patches = recipe.patch_paths()
    assert [p.name[:4] for p in patches] == ["0001", "0002"] and all(p.is_file() for p in patches)


def test_cross_profiles_carry_their_toolchains():
    recipe = load_recipe()
    android = recipe.profile("android-arm64")
    assert android.toolchain_file == "$ANDROID_NDK_HOME/build/cmake/android.toolchain.cmake"
    assert recipe.flags_for("android-arm64")["ANDROID_ABI"] == "arm64-v8a"
    assert recipe.flags_for("android-arm64")["ANDROID_PLATFORM"] == "android-28"
    assert recipe.flags_for("jetson-cuda")["GGML_CUDA"] == "ON"
    gcc = recipe.toolchain_path("arm64")
    assert gcc == recipe.root / "toolchains/aarch64-linux-gnu.cmake" and gcc.is_file()
    assert "aarch64-linux-gnu-g++" in gcc.read_text()
    assert recipe.toolchain_path("linux-aarch64") == gcc


def test_phone_profiles_are_static_portable_and_march_explicit():
    recipe = load_recipe()
    for name, march in (("arm64", "armv8.2-a+dotprod+fp16"), ("arm64-baseline", "armv8-a"),
                        ("android-arm64", "armv8.2-a+dotprod+fp16")):
        flags = recipe.flags_for(name)
        assert flags["GGML_NATIVE"] == "OFF" and flags["GGML_CPU_ARM_ARCH"] == march
        assert recipe.profile(name).abi == "arm64-v8a"
        # models are quantized on the host: a device build leaves llama-quantize out
        assert set(recipe.profile(name).targets) == {"llama-bench", "llama-completion", "llama-server",
                                                          "llama-perplexity"}
    assert recipe.flags_for("arm64")["CMAKE_EXE_LINKER_FLAGS"] == "-static"
    assert recipe.flags_for("arm64-baseline")["CMAKE_EXE_LINKER_FLAGS"] == "-static"


def _ndk(tmp_path: Path) -> Path:
    tool = tmp_path / "ndk" / "build/cmake/android.toolchain.cmake"
    tool.parent.mkdir(parents=True)
    tool.write_text("# a stand-in: auto only checks that it exists\n")
    return tmp_path / "ndk"


def test_auto_picks_by_device_kind_and_abi(monkeypatch, tmp_path):
    from melt.devices.abi import host_abi

    recipe = load_recipe()
    no_ndk = {"PATH": os.environ["PATH"]}
    assert recipe.auto_profile("android", "arm64-v8a", no_ndk) == "arm64"
    ndk = _ndk(tmp_path)
    for var in ("ANDROID_NDK_HOME", "ANDROID_NDK"):  # the older name works too
        environ = {**no_ndk, var: str(ndk)}
        assert recipe.auto_profile("android", "arm64-v8a", environ) == "android-arm64"
        assert recipe.toolchain_path("android-arm64", environ) == ndk / "build/cmake/android.toolchain.cmake"
    assert recipe.auto_profile("local", "arm64-v8a", no_ndk) == "host"
    assert recipe.auto_profile("android", host_abi(), no_ndk) == "host"  # an x86_64 phone on a PC


def test_auto_says_what_is_missing(tmp_path):
    recipe = load_recipe()
    with pytest.raises(BuildError) as err:
        recipe.auto_profile("android", "arm64-v8a", {"PATH": str(tmp_path)})
    message = str(err.value)
    assert "android-arm64: the Android NDK was not found: ANDROID_NDK_HOME or ANDROID_NDK is not set" in message
    assert "arm64: the aarch64 cross compiler (aarch64-linux-gnu-g++) is not on PATH" in message
    with pytest.raises(BuildError, match="did not report"):
        recipe.auto_profile("android", None)
    with pytest.raises(BuildError, match="ABI riscv64"):
        recipe.auto_profile("android", "riscv64", {"PATH": str(tmp_path)})


def test_a_checkout_anywhere_shares_the_cache_key_of_the_toolchain(tmp_path):
    from melt.frameworks.llamacpp.build import _toolchain_identity

    recipe = load_recipe()
    ident = _toolchain_identity(recipe, recipe.toolchain_path("arm64"))
    assert ident.startswith("toolchains/aarch64-linux-gnu.cmake@sha256:")
    copy = tmp_path / "llama.cpp"
    shutil.copytree(recipe.root, copy)
    other = load_recipe(copy / "recipe.yaml")
    assert _toolchain_identity(other, other.toolchain_path("arm64")) == ident
    (copy / "toolchains/aarch64-linux-gnu.cmake").write_text("# changed\n")
    assert _toolchain_identity(other, other.toolchain_path("arm64")) != ident


def test_unknown_profile_suggests():
    with pytest.raises(UnknownNameError, match="Did you mean: host"):
        load_recipe().profile("hots")


def test_missing_ndk_is_a_clear_build_error(monkeypatch, tmp_path):
    monkeypatch.delenv("ANDROID_NDK", raising=False)
    monkeypatch.delenv("ANDROID_NDK_HOME", raising=False)
    monkeypatch.setenv("MELT_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(BuildError) as err:
        build_llamacpp("android-arm64")
    message = str(err.value)
    assert "\n" not in message
    assert "Android NDK" in message and "ANDROID_NDK_HOME or ANDROID_NDK is not set" in message
    assert "sdkmanager" in message  # says how to get it
    assert not (tmp_path / "cache").exists()  # failed before downloading anything


def test_ndk_folder_without_toolchain_file(monkeypatch, tmp_path):
    monkeypatch.delenv("ANDROID_NDK_HOME", raising=False)
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
    with pytest.raises(BuildError, match=r"cannot build profile 'arm64': the aarch64 cross compiler"):
        check_toolchain(load_recipe().profile("arm64"))


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

"""Bad input gives one clear line, never a traceback, and never reaches a program as an option."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from melt.errors import BuildError, ConfigError
from tests.helpers import error_line

ROOT = Path(__file__).resolve().parents[2]


def melt(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "melt.cli.main", *args], capture_output=True,
                          text=True, timeout=60, cwd=cwd, stdin=subprocess.DEVNULL)


def test_experiment_file_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "e.yaml"
    bad.write_bytes("name: caf\u00e9\n".encode("latin-1"))
    from melt.config.loader import load_experiment

    with pytest.raises(ConfigError, match="line 1: not UTF-8"):
        load_experiment(bad)
    done = melt("run", str(bad), "--results", str(tmp_path / "r"))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "not UTF-8" in done.stderr


def test_tiny_model_with_a_negative_seed_is_a_usage_error(tmp_path: Path) -> None:
    done = melt("model", "tiny", str(tmp_path / "t.gguf"), "--seed", "-1")
    assert error_line(done).startswith("Error: Invalid value for '--seed': -1 is not in the range")
    assert done.stderr.startswith("Usage: ") and not (tmp_path / "t.gguf").exists()


@pytest.mark.parametrize("source", [
    "git+--upload-pack=touch${IFS}pwned@main",
    "git+-oProxyCommand=x@main",
    "git+https://example.org/llama.cpp@--output=x",
    "git+not a url@main",
])
def test_git_sources_that_git_would_read_as_options_are_rejected(source: str, tmp_path: Path) -> None:
    from melt.frameworks.llamacpp.recipe import load_recipe
    from melt.frameworks.llamacpp.source import parse_source

    with pytest.raises(BuildError, match="is not a"):
        parse_source(source, load_recipe())


def test_git_sources_that_are_urls_pass() -> None:
    from melt.frameworks.llamacpp.recipe import load_recipe
    from melt.frameworks.llamacpp.source import parse_source

    recipe = load_recipe()
    for text in ("git+https://github.com/ggml-org/llama.cpp@b6000", "git+ssh://git@example.org/x",
                 "git+git@example.org:x/llama.cpp@v1.2", "git+file:///srv/llama.cpp@main"):
        assert parse_source(text, recipe).kind == "git"


class _Shell:
    """A device whose shell is dash and whose ``bash`` has no $EPOCHREALTIME (bash < 5.0)."""

    def __init__(self, bin_dir: Path):
        self.env = {**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin"}

    def shell(self, script: str, *, timeout: float = 60, check: bool = True):
        done = subprocess.run(["/bin/dash", "-c", script], capture_output=True, text=True,
                              env=self.env, timeout=timeout)
        return SimpleNamespace(stdout=done.stdout, stderr=done.stderr, returncode=done.returncode)


def test_old_bash_without_epochrealtime_is_not_chosen(tmp_path: Path) -> None:
    from melt.telemetry.session import TelemetrySession

    old_bash = tmp_path / "bash"
    old_bash.write_text("#!/bin/sh\nexec /bin/dash \"$@\"\n")  # a bash by name, without the ability
    old_bash.chmod(0o755)
    from melt.config.specs import TelemetrySpec

    session = TelemetrySession.__new__(TelemetrySession)
    session.transport = _Shell(tmp_path)
    session.spec = TelemetrySpec()
    assert session._probe()[:2] == ("sh", "uptime")
    old_bash.write_text("#!/bin/sh\nexec /bin/bash \"$@\"\n")  # bash 5: has it
    assert session._probe()[:2] == (str(old_bash), "realtime")


def _experiment(tmp_path: Path, extra: str, models: str = "[{name: t, tiny_seed: 1}]") -> Path:
    path = tmp_path / "e.yaml"
    path.write_text(f"name: x\ndevices: [local]\nmodels: {models}\n"
                    "workloads: [{name: g, kind: generate, prompt: hi, n_predict: 4}]\n" + extra)
    return path


def test_duplicate_model_names_are_rejected(tmp_path: Path) -> None:
    from melt.config.loader import load_experiment

    path = _experiment(tmp_path, "", models="[{name: t, tiny_seed: 1}, {name: t, tiny_seed: 2}]")
    with pytest.raises(ConfigError, match="model names must be unique.*: t"):
        load_experiment(path)


def test_unknown_adaptive_metric_is_rejected_before_anything_runs(tmp_path: Path) -> None:
    path = _experiment(tmp_path, "adaptive: {metric: decode_tsp}\n")
    done = melt("run", str(path), "--results", str(tmp_path / "r"))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "Unknown adaptive.metric 'decode_tsp'" in done.stderr and "decode_tps" in done.stderr
    assert not (tmp_path / "r").exists()  # nothing ran


def test_config_paths_that_would_inject_into_the_device_shell_are_rejected() -> None:
    from pydantic import ValidationError

    from melt.config.specs import RailSpec, TelemetrySpec

    for bad in ("/sys/x; rm -rf /data", "/sys/$(reboot)/f", "relative/*", "/sys/a b/*", "/sys/../etc/*"):
        with pytest.raises(ValidationError, match="not an absolute device path pattern"):
            TelemetrySpec(cpufreq_glob=bad)
    with pytest.raises(ValidationError, match="not an absolute device path"):
        TelemetrySpec(thermal_dir="/sys/class/thermal`id`")
    with pytest.raises(ValidationError, match="not an absolute device path"):
        RailSpec(name="vdd", power_file="/sys/rail'p")
    ok = TelemetrySpec(cpufreq_glob="/sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_cur_freq")
    assert ok.cpufreq_glob.endswith("scaling_cur_freq")

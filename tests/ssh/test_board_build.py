"""llama.cpp built on the board over SSH (``build_on: device``), on the virtual Jetson.

The board builds the host profile with the real cmake and g++, inside its
sandbox, through the real sshd. Its $HOME (the work dir with the staged
source and the finished build) is kept under melt's cache between test runs,
as a real board keeps its disk, so only the first test run on a machine pays
for the compile (llama-bench only, a few minutes on two cores). Every
test run still checks that a build is found on the board with the board's
provenance, that a second run compiles nothing (the board's cmake logs
every call it gets), and that a broken profile fails at CMake's configure
step with the tail of its log.
"""

from __future__ import annotations

import datetime as dt
import getpass
import os
import pwd
import shutil
import socket
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from melt.frameworks.cache import cache_root, file_lock
from melt.runner.engine import QuietEvents, run_experiment
from melt.transports.hostkeys import trust
from melt.transports.ssh import DEFAULT_PATH
from melt.virtual.jetson import VirtualJetson
from melt.virtual.registry import phone_dir
from tests.conftest_models import gemma_model  # noqa: F401
from tests.helpers import ROOT, need
from tests.ssh.conftest import _sshd_usable, write_device_config

pytestmark = pytest.mark.slow

HOME = pwd.getpwnam(getpass.getuser()).pw_dir  # the board's $HOME, as its commands see it
#: a cmake on the board's PATH ahead of the real one, logging each call it gets
CMAKE_SPY = """#!/bin/sh
printf '%s\\n' "$*" >> "$HOME/cmake-calls.log"
exec /usr/bin/cmake "$@"
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def board(melt_config: Path) -> Iterator[VirtualJetson]:
    """A virtual Jetson whose $HOME is the one kept under melt's cache (moved in, and back after)."""
    need(_sshd_usable(), "/usr/sbin/sshd (openssh-server) and a working bubblewrap")
    kept = cache_root() / "test-boards" / "virtual-jetson-build"
    with file_lock(kept.parent / f".{kept.name}.lock"):
        for left in sorted(kept.glob("phone-*")):  # left by a test run that was killed
            if (left / "root" / "home").is_dir() and not (kept / "home").exists():
                os.rename(left / "root" / "home", kept / "home")
            shutil.rmtree(left, ignore_errors=True)
        port = _free_port()
        home = phone_dir(kept, port) / "root" / "home"
        home.parent.mkdir(parents=True, exist_ok=True)
        if (kept / "home").is_dir():
            os.rename(kept / "home", home)
        jetson = VirtualJetson(ROOT / "device_configs/virtual-jetson.yaml", port=port, state_dir=kept)
        try:
            jetson.start()
            trust(jetson.host, jetson.port)
            yield jetson
        finally:
            jetson.stop()
            if home.is_dir():
                os.rename(home, kept / "home")
            shutil.rmtree(phone_dir(kept, port), ignore_errors=True)


class _Seen(QuietEvents):
    """Keeps what the runner tells a display: stage messages and build output lines."""

    def __init__(self) -> None:
        self.stages: list[str] = []
        self.lines: list[tuple[str, str]] = []

    def stage(self, message: str) -> None:
        self.stages.append(message)

    def build_output(self, label: str, line: str) -> None:
        self.lines.append((label, line))


def _setup(board: VirtualJetson, folder: Path, gemma: Path, **device) -> Path:
    """A device config building on the board (cmake spy first on PATH) and a one-job bench experiment."""
    spy = board.host_path(f"{HOME}/spy-bin/cmake")
    spy.parent.mkdir(parents=True, exist_ok=True)
    spy.write_text(CMAKE_SPY)
    spy.chmod(0o755)
    path = write_device_config(folder, board, path=f"{HOME}/spy-bin:{DEFAULT_PATH}")
    doc = yaml.safe_load(path.read_text())
    doc.update({"build_on": "device", **device})
    path.write_text(yaml.safe_dump(doc))
    exp = folder / "experiments" / "board.yaml"
    exp.parent.mkdir(parents=True, exist_ok=True)
    exp.write_text(yaml.safe_dump({
        "name": "board-build", "devices": ["virtual-jetson"], "frameworks": [{"name": "llama.cpp"}],
        "models": [{"name": "gemma", "path": str(gemma)}],
        "workloads": [{"name": "bench", "kind": "bench", "n_prompt": [16], "n_gen": [4], "threads": [2]}],
        "repetitions": 2, "warmup": 0}))
    return exp


def _cmake_calls(board: VirtualJetson) -> list[str]:
    log = board.host_path(f"{HOME}/cmake-calls.log")
    return log.read_text().splitlines() if log.exists() else []


def test_board_builds_once_then_reuses_and_every_job_carries_its_provenance(
        board, gemma_model, tmp_path: Path, monkeypatch) -> None:
    exp = _setup(board, tmp_path, gemma_model)
    monkeypatch.chdir(tmp_path)
    started = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    calls_before = _cmake_calls(board)

    first_events = _Seen()
    first = run_experiment(exp, results_dir=tmp_path / "results", events=first_events)
    records = first.jobs()
    assert len(records) == 2 and all(r["status"] == "ok" for r in records), [r["reason"] for r in records]
    build = records[0]["provenance"]["framework_build"]
    calls_first = _cmake_calls(board)[len(calls_before):]
    built_now = dt.datetime.fromisoformat(build["built_at"]) >= started
    if built_now:  # (a) this run compiled it on the board: configure and build went through its cmake
        assert any(c.startswith("-S ") for c in calls_first) and any(c.startswith("--build ") for c in calls_first)
        assert any("--target llama-bench" in c for c in calls_first)
        # the build's lines reached the display while it ran (ninja's [N/M] steps)
        assert any(line.startswith("[") and "/" in line for _, line in first_events.lines)
    else:  # (a) built in an earlier test run and found on the board: nothing ran
        assert calls_first == []
        assert any("cached build on virtual-jetson" in line for _, line in first_events.lines)
    assert all(label == "llama.cpp (host) on virtual-jetson" for label, _ in first_events.lines)

    # (c) every job says what the board built, with what
    on_board = board.host_path(f"{HOME}/melt/builds/llama.cpp/host-{build['key']}")
    assert (on_board / "bin" / "llama-bench").is_file()
    stored = __import__("json").loads((on_board / "build.json").read_text())
    for record in records:
        prov = record["provenance"]["framework_build"]
        assert prov == stored
        assert prov["built_on"] == "device" and prov["profile"] == "host"
        assert prov["build_machine"]["device"] == "virtual-jetson"
        assert prov["compiler"]["id"] == "GNU" and prov["compiler"]["version"]
        assert prov["compiler"]["path"].endswith("c++")
        assert prov["cmake_version"] and prov["cmake_flags"]["GGML_NATIVE"] == "OFF"
        assert prov["llama_cpp_commit"] and prov["build_commit"] == prov["llama_cpp_commit"][:8]
        assert prov["cuda"]["version"] is None and "not a CUDA build" in prov["cuda"]["reason"]
        assert "no nvcc" in prov["cuda"]["reason"]
        assert "llama-bench" in prov["binaries"] and len(prov["binaries"]["llama-bench"]["sha256"]) == 64
        # the job ran the board's own binary, not one pushed from here
        assert f"/melt/builds/llama.cpp/host-{build['key']}/bin/llama-bench" in record["provenance"]["command"]
        assert record["metrics"]["decode_tps"] > 0

    # (b) a second run reuses it: no cmake call at all on the board, and nothing sent
    stamp = (on_board / "build.json").stat().st_mtime_ns
    second_events = _Seen()
    second = run_experiment(exp, results_dir=tmp_path / "results", events=second_events)
    assert all(r["status"] == "ok" for r in second.jobs())
    assert _cmake_calls(board)[len(calls_before) + len(calls_first):] == []
    assert (on_board / "build.json").stat().st_mtime_ns == stamp
    assert [line for _, line in second_events.lines] == [f"cached build on virtual-jetson: {HOME}/melt/builds/"
                                                          f"llama.cpp/host-{build['key']}"]
    assert all(r["provenance"]["framework_build"] == stored for r in second.jobs())


def test_a_broken_profile_fails_at_configure_with_the_tail_of_its_log(
        board, gemma_model, tmp_path: Path, monkeypatch) -> None:
    recipes = tmp_path / "frameworks"
    shutil.copytree(ROOT / "frameworks" / "llama.cpp", recipes / "llama.cpp")
    recipe = recipes / "llama.cpp" / "recipe.yaml"
    doc = yaml.safe_load(recipe.read_text())
    doc["profiles"]["broken"] = {"description": "a compiler that is not there", "abi": "host",
                                 "flags": {"CMAKE_CXX_COMPILER": "/opt/no-such-compiler/bin/c++"},
                                 "targets": doc["targets"]}
    recipe.write_text(yaml.safe_dump(doc))
    monkeypatch.setenv("MELT_FRAMEWORKS_DIR", str(recipes))
    exp = _setup(board, tmp_path, gemma_model, build_profile="broken")
    monkeypatch.chdir(tmp_path)
    calls_before = len(_cmake_calls(board))
    events = _Seen()

    t0 = dt.datetime.now()
    run = run_experiment(exp, results_dir=tmp_path / "results", events=events)
    took = (dt.datetime.now() - t0).total_seconds()
    records = run.jobs()
    assert len(records) == 2 and all(r["status"] == "failed" for r in records)
    reason = records[0]["reason"]
    print(reason)
    assert "\n" not in reason and "Traceback" not in reason
    assert reason.startswith("cmake configure failed on virtual-jetson (exit 1)")
    assert "/opt/no-such-compiler/bin/c++" in reason and "log tail: " in reason
    assert "full log on the board: " in reason and "/builds/llama.cpp/.work/broken-" in reason
    assert records[1]["reason"] == reason  # the build is tried once, not once per job
    calls = _cmake_calls(board)[calls_before:]
    assert len(calls) == 1 and calls[0].startswith("-S ")  # configure only: no compile was started
    assert took < 120


def test_stream_hands_on_lines_while_the_command_runs_and_its_status(board, tmp_path: Path) -> None:
    import time

    from melt.config.specs import DeviceSpec
    from melt.devices.linux import LinuxDevice
    from melt.errors import CommandTimeout

    spec = DeviceSpec(name="virtual-jetson", kind="jetson", ssh={"host": board.host, "port": board.port})
    device = LinuxDevice.connect(spec)
    try:
        seen: list[tuple[float, str]] = []
        t0 = time.monotonic()
        done = device.stream("echo one; sleep 1.5; printf 'two\\nthr'; echo ee >&2; printf 'no end'; exit 3",
                             log="/tmp/stream-test/log", on_line=lambda line: seen.append((time.monotonic(), line)),
                             poll_s=0.1)
        assert done.returncode == 3
        assert [line for _, line in seen] == ["one", "two", "three", "no end"]  # stderr too, in order
        assert seen[0][0] - t0 < 1.2  # the first line came while the command still slept
        assert done.tail == ("one", "two", "three", "no end")
        assert board.host_path("/tmp/stream-test/log").read_text() == "one\ntwo\nthree\nno end"
        assert not list(board.host_path("/tmp/stream-test").glob("*.status"))

        with pytest.raises(CommandTimeout):
            device.stream("echo $$ > /tmp/stream-test/pid; exec sleep 30", log="/tmp/stream-test/log2",
                          timeout_s=1, poll_s=0.1)
        pid = int(board.host_path("/tmp/stream-test/pid").read_text())
        deadline = time.monotonic() + 5
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not Path(f"/proc/{pid}").exists()  # its process group was killed
    finally:
        device.close()

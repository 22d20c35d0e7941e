"""A build that `melt run` starts shows how far it has got, as `melt build` does."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace

from rich.console import Console

from melt.cli.run_cmd import ProgressEvents
from melt.runner.device_worker import BuildCache, DeviceWorker

CMAKE_LINES = [f"[{p:3d}%] Building CXX object src/CMakeFiles/llama.dir/llama-{p}.cpp.o" for p in range(0, 101, 4)]


def test_a_log_gets_one_line_per_tenth_of_the_build(monkeypatch) -> None:
    out = io.StringIO()
    console = Console(file=out, width=100, force_terminal=False)
    monkeypatch.setattr("melt.cli.run_cmd.stderr_console", lambda: console)
    events = ProgressEvents()
    for line in ["-- Configuring done", *CMAKE_LINES, "some compiler warning"]:
        events.build_output("llama.cpp (host)", line)
    lines = out.getvalue().splitlines()
    assert lines[0] == "building llama.cpp (host) 0% llama", lines
    assert lines[-1].startswith("building llama.cpp (host) 100%"), lines
    percents = [int(line.split()[3].rstrip("%")) for line in lines]
    assert all(b - a >= 10 for a, b in zip(percents, percents[1:-1])), percents
    assert percents == [0, 12, 24, 36, 48, 60, 72, 84, 96, 100], percents  # a tenth apart, and the end


class FakeFramework:
    name = "fake"

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def build(self, profile: str, *, source=None, targets=None, on_output=None):
        self.calls.append({"profile": profile, "targets": targets})
        for line in CMAKE_LINES[:3]:
            on_output(line)
        return SimpleNamespace(bin_dir=Path("."), binaries={})


def test_the_worker_hands_the_builds_lines_to_the_display() -> None:
    seen: list[tuple[str, str]] = []
    events = SimpleNamespace(stage=lambda message: seen.append(("stage", message)),
                             job_started=lambda job, warmup: None,
                             build_output=lambda label, line: seen.append((label, line)))
    worker = DeviceWorker.__new__(DeviceWorker)  # only what _build reads
    worker.events, worker.builds, worker.spec = events, BuildCache(), SimpleNamespace(build_profile="host", build_on="host")
    framework = FakeFramework()
    worker._build(framework, SimpleNamespace(binaries=None, profile="host", source=None, name="fake"),
                  "x86_64", ["llama-bench"])
    assert seen[0] == ("stage", "building fake (host)")
    assert seen[1:] == [("fake (host)", line) for line in CMAKE_LINES[:3]]

"""The build display moves with CMake's "[ 42%]" lines and Ninja's "[n/m]" lines."""

from __future__ import annotations

from melt.cli.build_progress import build_step, step_bar

# the shape of CMake's Makefile-generator output for llama.cpp targets
MAKE_LINES = [
    "[  2%] Building C object ggml/src/CMakeFiles/ggml-base.dir/ggml.c.o",
    "[ 42%] Built target llama",
    "[ 87%] Linking CXX executable ../../bin/llama-bench",
    "[100%] Built target llama-bench",
]


def test_cmake_percentages_move_the_bar_and_name_the_target() -> None:
    steps = [build_step(line) for line in MAKE_LINES]
    assert [s.percent for s in steps] == [2.0, 42.0, 87.0, 100.0]
    assert [s.doing for s in steps] == ["ggml-base", "llama", "../../bin/llama-bench", "llama-bench"]
    bars = [step_bar(s.percent) for s in steps]
    assert bars[1].count("#") == 8 and bars[1].endswith(" 42%")
    assert bars[-1].count("#") == 20 and "-" not in bars[-1]


def test_ninja_steps_and_other_lines() -> None:
    step = build_step("[12/48] Building CXX object src/CMakeFiles/llama.dir/llama.cpp.o")
    assert step is not None and step.percent == 25.0 and step.doing == "llama"
    assert build_step("-- Configuring done") is None
    assert build_step("[0/0] nothing") is None
    assert step_bar(None) == "…"  # no share known: a spinner's text, not a fake 0%

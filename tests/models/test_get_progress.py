"""``melt model get`` in a log or pipe prints readable progress lines, not raw byte counts."""

from __future__ import annotations

import re

from click.testing import CliRunner
from rich.filesize import decimal

from melt.cli.main import cli
from melt.models import catalog as cat
from tests.models.test_catalog import WHOLE, _entry, index  # noqa: F401  (index is a fixture)


def test_model_get_without_a_terminal_prints_sizes_in_human_units(index, monkeypatch) -> None:  # noqa: F811
    monkeypatch.setattr(cat, "BUILTIN", {"test-model": _entry()})
    result = CliRunner().invoke(cli, ["model", "get", "test-model"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("download ")]
    assert lines, result.output
    size = decimal(len(WHOLE))  # 450.0 kB: the test model is small
    assert lines[-1].startswith(f"download {size}/{size}"), lines
    # the rate is shown in human units once it is known; a download over before the clock
    # could measure one shows none rather than a zero
    for line in lines:
        rate = re.search(r" (\S+ \S*B)/s", line)
        assert rate is None or re.fullmatch(r"[\d.]+ [kMG]?B", rate.group(1)), line
    assert not re.search(r"\b\d{6,}\b", "\n".join(lines)), lines  # no raw byte counts

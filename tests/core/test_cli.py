"""The CLI: every command teaches with --help; errors are one line, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
from click.testing import CliRunner

from melt.cli.main import cli

ROOT = Path(__file__).resolve().parents[2]


def all_commands(group: click.Group, ctx: click.Context, prefix=()):
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        yield prefix + (name,), cmd
        if isinstance(cmd, click.Group):
            yield from all_commands(cmd, ctx, prefix + (name,))


def test_every_command_has_help():
    ctx = click.Context(cli)
    seen = list(all_commands(cli, ctx))
    assert {"run", "results", "schema", "devices"} <= {p[0] for p, _ in seen}
    for path, cmd in seen:
        result = CliRunner().invoke(cli, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Usage:" in result.output
        assert (cmd.help or "").strip(), f"melt {' '.join(path)} has no help text"


def melt(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "melt.cli.main", *args], capture_output=True,
                          text=True, cwd=cwd or ROOT, timeout=120)


def test_version():
    from melt import __version__

    out = melt("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"melt, version {__version__}"


def test_malformed_experiment_is_one_line_exit_1(tmp_path):
    bad = tmp_path / "x.yaml"
    bad.write_text("name: x\ndevices: [local]\nmodels: [{name: t, tiny_seed: 0}]\n"
                   "workloads: [{kind: bench, name: b, n_gen: 0}, {kind: bench, name: c, n_gen: -4}]\n")
    out = melt("run", str(bad), "--results", str(tmp_path / "r"))
    assert out.returncode == 1
    assert out.stderr.strip() == f"Error: {bad}: workloads[1].n_gen: must be >= 0 (got -4)"
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())


def test_unknown_run_is_one_line(tmp_path):
    out = melt("results", "show", "nope", "--results", str(tmp_path))
    assert out.returncode == 1
    assert out.stderr.startswith("Error: no run 'nope'") and "Traceback" not in out.stderr


def test_schema_prints_json():
    import json

    out = melt("schema", "experiment")
    assert out.returncode == 0, out.stderr
    schema = json.loads(out.stdout)
    assert schema["title"] == "melt experiment"
    assert {"name", "devices", "models", "workloads"} <= set(schema["required"])

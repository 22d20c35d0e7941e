"""Optional extras (``pip install 'melt[farm]'``): which command needs which, and how to get it.

The extras themselves are declared in ``pyproject.toml``; this module maps the
modules they bring to their extra's name, so that a missing one becomes one
line saying what to install instead of a ``ModuleNotFoundError`` traceback.
"""

from __future__ import annotations

import importlib

from melt.errors import MeltError

#: extra -> the top-level modules melt imports from it
IMPORTED: dict[str, tuple[str, ...]] = {
    "farm": ("celery", "redis", "kombu"),
    "ios": ("pymobiledevice3",),
    "monsoon": ("Monsoon",),
}
#: extra -> every top-level module it installs (its packages' dependencies too)
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    **IMPORTED,
    "farm": (*IMPORTED["farm"], "billiard", "vine", "amqp", "click_didyoumean", "click_repl",
             "click_plugins", "setproctitle"),
}


class MissingExtra(MeltError):
    """A command needs an optional extra that is not installed; the message says how to install it."""

    def __init__(self, extra: str, missing: str, command: str | None = None):
        self.extra, self.missing = extra, missing
        who = command or "this command"
        super().__init__(f"{who} needs melt's {extra} extra, which is not installed "
                         f"(no module named {missing!r}): {install_hint(extra)}")


def extra_of(module: str | None) -> str | None:
    """The extra that installs ``module`` (a dotted name is taken by its top level), if any."""
    if not module:
        return None
    top = module.split(".")[0]
    return next((extra for extra, mods in EXTRA_MODULES.items() if top in mods), None)


def install_hint(extra: str) -> str:
    """The command that installs ``extra`` the way melt itself is installed.

    melt run from its source folder (an editable install, ``make demo``'s) gets
    ``pip install -e 'FOLDER[extra]'``; an installed package gets
    ``pip install 'melt[extra]'``.
    """
    from pathlib import Path

    import melt

    source = Path(melt.__file__).resolve().parent.parent
    try:
        is_source = 'name = "melt"' in (source / "pyproject.toml").read_text(encoding="utf-8")
    except OSError:
        is_source = False
    return f"pip install -e '{source}[{extra}]'" if is_source else f"pip install 'melt[{extra}]'"


def require(extra: str, command: str | None = None) -> None:
    """Import the modules melt uses from ``extra``; :class:`MissingExtra` when one is missing.

    ``command`` names what needs it in the message (``"melt farm"``).
    """
    for module in IMPORTED[extra]:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            raise MissingExtra(extra, exc.name or module, command) from None


def command_of(argv: list[str]) -> str:
    """``melt GROUP`` from a command line (``melt run --farm`` when the farm is asked for)."""
    words = [a for a in argv if not a.startswith("-")][:1]
    name = " ".join(["melt", *words])
    if words == ["run"] and any(a == "--farm" or a.startswith("--farm=") for a in argv):
        name += " --farm"
    return name

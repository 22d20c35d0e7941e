"""``python -m melt.virtual serve|jetson|iphone``: run one virtual device in this process.

Prints the address to ``adb connect`` to (one line on stdout) once it
listens, then stays quiet (logs go to the phone's ``phone.log``) until
SIGTERM or SIGINT. This is what :class:`melt.virtual.phone.VirtualPhone` and
``melt virtual start android --detach`` launch.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from melt.errors import MeltError
from melt.virtual.config import load_config
from melt.virtual.registry import default_state_dir
from melt.virtual.runtime import serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m melt.virtual")
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run a virtual Android phone until stopped")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=None, help="default: the config's port; 0 picks one")
    s.add_argument("--config", default=None, help="device config YAML with a `virtual:` section")
    s.add_argument("--state-dir", default=None)
    s.add_argument("--unisolated", action="store_true",
                   help="run even without bubblewrap (the phone's commands then run on this host)")
    j = sub.add_parser("jetson", help="run a virtual Jetson (a real sshd in front of it) until stopped")
    for a in ("--host", "--port", "--config", "--state-dir"):
        j.add_argument(a, default="127.0.0.1" if a == "--host" else None, type=int if a == "--port" else str)
    i = sub.add_parser("iphone", help="run a virtual iPhone (its services on loopback) until stopped")
    for a in ("--host", "--port", "--config", "--state-dir"):
        i.add_argument(a, default="127.0.0.1" if a == "--host" else None, type=int if a == "--port" else str)
    args = parser.parse_args(argv)
    if args.command == "jetson":
        return _jetson(args)
    if args.command == "iphone":
        return _iphone(args)
    try:
        config = load_config(args.config)
    except MeltError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    port = config.port if args.port is None else args.port
    state_dir = Path(args.state_dir) if args.state_dir else default_state_dir()

    def ready(address: str) -> None:
        print(address, flush=True)
        # nothing more goes to stdout: whoever read the address may be gone
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)

    try:
        serve(config, host=args.host, port=port, state_dir=state_dir, on_ready=ready,
              allow_unisolated=args.unisolated)
    except MeltError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"Error: cannot listen on {args.host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except MeltError as exc:  # e.g. its ABI cannot run here
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    return 0


def _ready(address: str) -> None:
    print(address, flush=True)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)


def _jetson(args: argparse.Namespace) -> int:
    from melt.virtual.jetson import run_jetson
    from melt.virtual.jetson_config import load_jetson_config

    try:
        config = load_jetson_config(args.config)
        port = config.port if args.port is None else args.port
        state_dir = Path(args.state_dir) if args.state_dir else default_state_dir()
        run_jetson(config, host=args.host, port=port, state_dir=state_dir, on_ready=_ready)
    except MeltError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"Error: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


def _iphone(args: argparse.Namespace) -> int:
    from melt.virtual.iphone import run_iphone
    from melt.virtual.iphone_config import load_iphone_config

    try:
        config = load_iphone_config(args.config)
        port = config.port if args.port is None else args.port
        state_dir = Path(args.state_dir) if args.state_dir else default_state_dir()
        run_iphone(config, host=args.host, port=port, state_dir=state_dir, on_ready=_ready)
    except MeltError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"Error: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

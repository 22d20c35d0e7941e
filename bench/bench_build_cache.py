"""Benchmark of melt's cached build and of its command-line start-up.

Not a test: it prints the figures recorded in docs/benchmarks.md.

    python bench/bench_build_cache.py [--reps 5] [--runs 20]

- A cached llama.cpp host build: ``build_llamacpp("host")`` in-process, and
  ``melt build`` as a command. Only when a finished host build for the pinned
  source is already in the cache (``~/.cache/melt`` or ``$MELT_CACHE_DIR``):
  otherwise that part is skipped with a message, never a build of minutes or
  a download.
- Start-up of the command line: ``melt --help``, and ``melt results list`` on a
  temporary results folder holding ``--runs`` small synthetic runs, beside a
  bare ``python -c pass`` and ``python -c "import melt"`` for scale.

Commands are run interleaved, ``--reps`` times each; medians and ranges are
printed. The temporary results folder is removed at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import machine, run  # bench/ is on sys.path when a bench runs

from melt.frameworks.base import Build

BIN = Path(sys.executable).parent
MELT = shutil.which("melt", path=str(BIN)) or "melt"



def cached_host_build() -> Build | None:
    """The finished host build of the pinned source if it is cached, else None.

    Computes the cache key the way ``build_llamacpp`` does, without building
    and without downloading: None when the pinned sdist is not downloaded yet,
    when cmake is missing, or when no finished build has that key.
    """
    from melt.errors import BuildError
    from melt.frameworks.cache import cache_root
    from melt.frameworks.llamacpp import build as b
    from melt.frameworks.llamacpp.source import obtain_source, parse_source

    recipe = b.load_recipe()
    prof = recipe.profile("host")
    ref = parse_source(None, recipe)
    if ref.kind != "pypi":
        return None
    stem = f"{ref.package.replace('-', '_').lower()}-{ref.version}"
    downloads = cache_root() / "downloads" / "pypi"
    if not any((downloads / f"{stem}{ext}").is_file() for ext in (".tar.gz", ".zip")):
        return None
    try:
        b.check_toolchain(prof)
        tree = obtain_source(ref, recipe)  # unpacks once if needed (seconds), never downloads here
    except BuildError:
        return None
    flags = b._resolved_flags(recipe, prof, tree)
    toolchain = os.path.expandvars(prof.toolchain_file) if prof.toolchain_file else None
    key = b.build_key(tree, prof, flags, toolchain)
    return b._load_finished(b.builds_root() / f"{prof.name}-{key}", b._published(recipe, prof))


def timed(argv: list[str], env: dict[str, str] | None = None) -> float:
    t = time.perf_counter()
    done = subprocess.run(argv, check=False, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
    seconds = time.perf_counter() - t
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed (exit {done.returncode}): {done.stderr.strip()[-300:]}")
    return seconds


def row(name: str, xs: list[float], base: float | None) -> str:
    m = statistics.median(xs)
    ratio = f"{m / base:.1f}x" if base else "-"
    return f"| {name} | {1000 * m:.0f} ({1000 * min(xs):.0f}-{1000 * max(xs):.0f}) | {ratio} |"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5, help="repetitions of each timing")
    ap.add_argument("--runs", type=int, default=20, help="synthetic runs in the results folder")
    args = ap.parse_args()
    print(f"machine: {machine()}")
    started = time.monotonic()

    # -- cached build
    build = cached_host_build()
    build_times: dict[str, list[float]] = {}
    if build is None:
        print("SKIPPED cached-build timings: no finished llama.cpp host build of the pinned source "
              "in the cache (run `melt build` once, about five minutes on two cores)")
    else:
        from melt.frameworks.llamacpp.build import build_llamacpp

        print(f"cached host build: {build.dir}")
        inproc, cli = [], []
        for _ in range(args.reps):
            t = time.perf_counter()
            got = build_llamacpp("host")
            inproc.append(time.perf_counter() - t)
            if not got.cached or got.dir != build.dir:
                raise SystemExit(f"expected the cached build {build.dir}, got {got.dir} (cached={got.cached})")
            cli.append(timed([MELT, "build", "--json"]))
        build_times = {"`build_llamacpp(\"host\")` in-process, cached": inproc,
                       "`melt build --json` (command, cached)": cli}

    # -- start-up
    tmp = Path(tempfile.mkdtemp(prefix="melt-bench-cli-"))
    try:
        from melt.analysis import synthetic as syn
        from melt.store.runs import ResultsStore

        store = ResultsStore(tmp / "results")
        cells = syn.grid()[:3]
        for i in range(args.runs):
            syn.make_run(store, cells, repetitions=2, seed=i)
        env = {**os.environ, "MELT_RESULTS_DIR": str(tmp / "results")}
        cmds = {
            "`python -c pass`": [sys.executable, "-c", "pass"],
            "`python -c \"import melt\"`": [sys.executable, "-c", "import melt"],
            "`melt --help`": [MELT, "--help"],
            f"`melt results list` ({args.runs} runs)": [MELT, "results", "list"],
            f"`melt results list --json` ({args.runs} runs)": [MELT, "results", "list", "--json"],
        }
        for argv in cmds.values():  # warm the page cache and bytecode
            timed(argv, env)
        times: dict[str, list[float]] = {k: [] for k in cmds}
        for _ in range(args.reps):
            for name, argv in cmds.items():
                times[name].append(timed(argv, env))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print()
    print(f"{args.reps} repetitions each, interleaved; median (min-max)")
    print("| command | ms | vs `python -c pass` |")
    print("| --- | --- | --- |")
    base = statistics.median(times["`python -c pass`"])
    for name, xs in {**build_times, **times}.items():
        print(row(name, xs, base))
    print(f"(total {time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    run(main)

"""Build llama.cpp on the board itself, over SSH (a device config's ``build_on: device``).

A Jetson's CUDA build needs the board's own nvcc and libraries, so the build
runs there: the pinned, patched source tree (the one the host build uses)
is packed once into ``<cache>/sources/llama.cpp/<id>.board.tar.gz`` and
staged content-addressed, as models are (sent once; checked by sha256 on the
board). On the board, under its work dir::

    sources/llama.cpp/<id>/                 the tree, unpacked once (``.melt-unpacked`` last)
    builds/llama.cpp/.work/<profile>-<key>/ CMake's folder and the build's log (kept)
    builds/llama.cpp/<profile>-<key>/       bin/, build.log, build.json (the marker, written last)

``key`` hashes what the host build's key does (source, patches, profile,
flags, targets) and that the build is the board's. A finished build folder
appears by one rename, with its ``build.json`` inside, so a later run that
finds it runs no compiler at all. A missing target is compiled in the kept
CMake folder and the build folder replaced with one that holds it too.
CMake's output reaches ``on_output`` line by line while it runs; a failed
step is one :class:`BuildError` with the step, the first error line and the
tail of the log. The provenance (``build.json``) records the board's
compiler (id, version, path), CMake version, flags, commit, CUDA (the
version CMake found, or why there is none) and the board's machine.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import shlex
import tarfile
import tempfile
from pathlib import Path
from typing import Any, Sequence

from melt import __version__ as melt_version
from melt.devices.linux import probe_sections
from melt.errors import BuildError
from melt.frameworks.base import Build, OutputCallback
from melt.frameworks.cache import cache_root, file_lock
from melt.frameworks.llamacpp.build import _first_error, _resolved_flags, build_key
from melt.frameworks.llamacpp.recipe import Profile, Recipe, load_recipe
from melt.frameworks.llamacpp.source import SourceTree, obtain_source, parse_source

# Bump when the way melt drives a board's CMake changes, so old board builds are not reused.
_BOARD_LOGIC = 1
#: top-level folders of the tree that no build target reads (test vocabularies, docs, images)
_NOT_SENT = {"models", "docs", "media", ".git", "build"}
#: the longest build.json read back from a board
_MAX_INFO_BYTES = 1 << 20
_TAIL_LINES = 8


def board_key(tree: SourceTree, prof: Profile, flags: dict[str, str]) -> str:
    """12 hex digits naming a board build: the host build's key, made the board's own."""
    blob = json.dumps({"build": build_key(tree, prof, flags, None), "on_board": _BOARD_LOGIC})
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def source_archive(tree: SourceTree) -> Path:
    """The tree packed for a board (made once, beside the unpacked tree; returns its path)."""
    archive = tree.path.with_name(tree.path.name + ".board.tar.gz")
    with file_lock(tree.path.with_name(f".{tree.path.name}.board.lock")):
        if archive.is_file():
            return archive
        fd, tmp = tempfile.mkstemp(prefix=f".{archive.name}.", dir=archive.parent)
        os.close(fd)
        try:
            with tarfile.open(tmp, "w:gz", compresslevel=6) as tar:
                for entry in sorted(tree.path.iterdir()):
                    if entry.name not in _NOT_SENT:
                        tar.add(entry, arcname=entry.name)
            os.chmod(tmp, 0o644)
            os.replace(tmp, archive)
        finally:
            Path(tmp).unlink(missing_ok=True)
    return archive


def board_profile(device: Any, requested: str, recipe: Recipe | None = None) -> str:
    """The profile a board builds: ``requested``, or for ``auto`` CUDA on a Jetson with nvcc, else ``host``."""
    if requested != "auto":
        return requested
    recipe = recipe or load_recipe()
    if device.spec.kind == "jetson" and "jetson-cuda" in recipe.profiles:
        r = device.transport.shell("command -v nvcc >/dev/null 2>&1", check=False, timeout=30)
        if r.returncode == 0:
            return "jetson-cuda"
    return "host"


class _Paths:
    """Where one build lives on the board."""

    def __init__(self, workdir: str, prof: Profile, key: str, tree: SourceTree):
        root = f"{workdir.rstrip('/')}/builds/llama.cpp"
        self.root = root
        self.final = f"{root}/{prof.name}-{key}"
        self.work = f"{root}/.work/{prof.name}-{key}"
        self.cmake = f"{self.work}/cmake"
        self.log = f"{self.work}/build.log"
        self.lock = f"{root}/.locks/{prof.name}-{key}.lock"
        self.sources = f"{workdir.rstrip('/')}/sources/llama.cpp"
        self.tree = f"{self.sources}/{tree.path.name}"


def build_on_board(device: Any, profile: str = "host", *, source: str | None = None,
                   targets: Sequence[str] | None = None, on_output: OutputCallback | None = None,
                   recipe: Recipe | None = None, cache: Path | None = None,
                   timeout_s: float = 4 * 3600) -> Build:
    """Build (or find already built) llama.cpp for ``profile`` on ``device``, a board over SSH.

    ``device`` is a :class:`melt.devices.linux.LinuxDevice`; ``source`` as for
    :func:`melt.frameworks.llamacpp.build.build_llamacpp`; ``targets`` the
    binaries wanted (default: all but the recipe's on-demand ones). The
    returned build's paths are the board's; ``cached`` is true when nothing
    was compiled. Raises :class:`BuildError` for a profile that cannot be
    built on a board, a tool the board lacks, or a failed CMake step (with
    the tail of its log); ``TransportError`` when the board goes away.
    """
    recipe = recipe or load_recipe()
    prof = recipe.profile(board_profile(device, profile, recipe))
    say = on_output or (lambda line: None)
    wanted = sorted(set(recipe.default_targets(prof.name) if targets is None else targets))
    unknown = [t for t in wanted if t not in prof.targets]
    if unknown:
        raise BuildError(f"profile '{prof.name}' does not build {', '.join(unknown)}; "
                         f"it builds {', '.join(prof.targets)}")
    if prof.toolchain_file:
        raise BuildError(f"profile '{prof.name}' cross-compiles (toolchain file {prof.toolchain_file}); "
                         "a board builds for itself: use host, or jetson-cuda on a Jetson")
    tree = obtain_source(parse_source(source, recipe), recipe, cache=cache, on_output=say)
    flags = _resolved_flags(recipe, prof, tree)
    key = board_key(tree, prof, flags)
    paths = _Paths(device.workdir(), prof, key, tree)
    name = device.spec.name

    existing = _finished(device, paths)
    if existing is not None and set(wanted) <= set(existing["binaries"]):
        say(f"cached build on {name}: {paths.final}")
        return _as_build(paths, existing, cached=True)
    _check_board(device, prof)
    archive = source_archive(tree)
    say(f"sending the llama.cpp source to {name} (once)")
    remote_archive = device.stage(archive, category="sources")
    _unpack(device, remote_archive, paths)
    have = sorted(existing["binaries"]) if existing else []
    todo = sorted(set(wanted) - set(have))
    jobs = _board_cpus(device)
    lock = (f"if command -v flock >/dev/null 2>&1; then exec 9>{shlex.quote(paths.lock)}; flock 9; fi\n"
            f"mkdir -p {shlex.quote(paths.cmake)}\n")
    configure = shlex.join(["cmake", "-S", paths.tree, "-B", paths.cmake, *[f"-D{k}={v}" for k, v in flags.items()]])
    device.transport.shell(f"mkdir -p {shlex.quote(paths.work)} {shlex.quote(paths.lock.rsplit('/', 1)[0])} && "
                           f"printf '# melt board build %s at %s\\n' {shlex.quote(prof.name + '-' + key)} "
                           f"{shlex.quote(_now())} >> {shlex.quote(paths.log)}", timeout=30)
    seconds = 0.0
    for step, script in (
        ("configure", lock + 'if command -v ninja >/dev/null 2>&1; then set -- -G Ninja; fi\n'
                      f'echo "$ {configure} $*"\n{configure} "$@"'),
        ("build", lock + "echo \"$ cmake --build ...\"\n"
                  + shlex.join(["cmake", "--build", paths.cmake, "-j", str(jobs), "--target", *todo])),
    ):
        say(f"cmake {step} on {name}")
        done = device.stream(script, log=paths.log, on_line=say, timeout_s=timeout_s)
        seconds += done.duration_s
        if done.returncode != 0:
            raise BuildError(_failure(name, step, done.returncode, done.tail, paths.log))
    info = _provenance(device, prof, tree, flags, key, paths, archive, jobs, seconds, have + todo)
    _publish(device, paths, have, todo, info, prof)
    say(f"built {prof.name} on {name} in {seconds:.0f} s: {paths.final}")
    return _as_build(paths, info, cached=False)


def _failure(device: str, step: str, code: int, tail: Sequence[str], log: str) -> str:
    """One line: the step, the first error, the last lines of the log and where the log is."""
    lines = [line.strip() for line in tail if line.strip()]
    last = " | ".join(line[:200] for line in lines[-_TAIL_LINES:]) or "no output"
    return (f"cmake {step} failed on {device} (exit {code}): {_first_error(lines)}; "
            f"log tail: {last}; full log on the board: {log}")


def _finished(device: Any, paths: _Paths) -> dict[str, Any] | None:
    """The finished build's ``build.json`` when it and every binary it lists are on the board."""
    q = shlex.quote
    r = device.transport.shell(
        f"cd {q(paths.final)} 2>/dev/null || exit 3; ls bin; echo @melt-info; head -c {_MAX_INFO_BYTES} build.json",
        check=False, timeout=30)
    if r.returncode != 0 or "@melt-info\n" not in r.stdout:
        return None
    listing, _, text = r.stdout.partition("@melt-info\n")
    try:
        info = json.loads(text)
        binaries = info["binaries"]
        if not isinstance(binaries, dict) or not all(isinstance(n, str) for n in binaries):
            return None
    except (ValueError, KeyError, TypeError):
        return None
    present = set(listing.split())
    return info if binaries and set(binaries) <= present else None


def _as_build(paths: _Paths, info: dict[str, Any], *, cached: bool) -> Build:
    # the board's file names are not trusted: every binary is bin/NAME of the build folder
    names = [n for n in info["binaries"] if re.fullmatch(r"[A-Za-z0-9._-]+", n)]
    return Build(dir=Path(paths.final), bin_dir=Path(f"{paths.final}/bin"),
                 binaries={n: Path(f"{paths.final}/bin/{n}") for n in names},
                 provenance=info, cached=cached)


def _check_board(device: Any, prof: Profile) -> None:
    """Raise :class:`BuildError` naming the first tool the board lacks for ``prof``."""
    checks = [("cmake", "CMake (cmake)", "apt-get install cmake on the board"),
              ("c++", "a C++ compiler (c++)", "apt-get install build-essential on the board")]
    machine = None
    for req in prof.requires:
        if req.program:
            checks.append((req.program, f"{req.what} ({req.program})", req.hint))
        elif req.arch:
            machine = machine or device.transport.shell("uname -m", timeout=30).stdout.strip()
            if {"arm64": "aarch64", "amd64": "x86_64"}.get(machine, machine) != req.arch:
                raise BuildError(f"profile '{prof.name}' needs {req.what}, but {device.spec.name} is {machine}")
        else:
            raise BuildError(f"profile '{prof.name}' needs {req.what} on the build machine: "
                             "it is built on this machine, not on a board (build_on: host)")
    for program, what, hint in checks:
        r = device.transport.shell(f"command -v {shlex.quote(program)}", check=False, timeout=30)
        if r.returncode != 0:
            raise BuildError(f"{device.spec.name} cannot build llama.cpp: {what} is not on its PATH "
                             f"(ssh.path: {device.spec.ssh.path if device.spec.ssh else '?'}); {hint}")


def _unpack(device: Any, archive: str, paths: _Paths) -> None:
    """Unpack the staged source on the board once (the folder appears by a rename, marked last)."""
    q = shlex.quote
    tmp = f"{paths.tree}.part"
    device.transport.shell(
        f"[ -f {q(paths.tree + '/.melt-unpacked')} ] && exit 0; "
        f"rm -rf {q(tmp)} {q(paths.tree)} && mkdir -p {q(tmp)} && "
        f"tar -xzf {q(archive)} -C {q(tmp)} --no-same-owner && touch {q(tmp + '/.melt-unpacked')} && "
        f"mv {q(tmp)} {q(paths.tree)}", timeout=600)


def _board_cpus(device: Any) -> int:
    text = device.transport.shell("getconf _NPROCESSORS_ONLN", check=False, timeout=30).stdout.strip()
    return max(1, min(int(text), 256)) if text.isdigit() else 2


def _provenance(device: Any, prof: Profile, tree: SourceTree, flags: dict[str, str], key: str,
                paths: _Paths, archive: Path, jobs: int, seconds: float, targets: list[str]) -> dict[str, Any]:
    """What the board says about the build it just made (read from CMake's probe files and tools)."""
    q = shlex.quote
    r = device.transport.shell(
        f"echo @cxx; cat {q(paths.cmake)}/CMakeFiles/*/CMakeCXXCompiler.cmake 2>/dev/null | grep '^set(CMAKE_CXX_COMPILER'\n"
        f"echo @cuda; cat {q(paths.cmake)}/CMakeFiles/*/CMakeCUDACompiler.cmake 2>/dev/null | grep '^set(CMAKE_CUDA_COMPILER'\n"
        "echo @nvcc; nvcc --version 2>/dev/null | grep -i release\n"
        "echo @cmake; cmake --version 2>/dev/null | head -n 1\n"
        "echo @uname; uname -sm\n", check=False, timeout=60)
    sections = probe_sections(r.stdout)
    cxx = _cmake_vars(sections.get("cxx", ""), "CXX")
    cuda_vars = _cmake_vars(sections.get("cuda", ""), "CUDA")
    nvcc = sections.get("nvcc", "").strip()[:200] or None
    if cuda_vars["version"]:
        cuda: dict[str, Any] = {"version": cuda_vars["version"], "compiler": cuda_vars["path"], "toolkit": nvcc}
    else:
        why = ("CMake found no CUDA compiler" if flags.get("GGML_CUDA") == "ON"
               else "not a CUDA build (GGML_CUDA is not ON)")
        cuda = {"version": None, "reason": why + ("" if nvcc else "; no nvcc on the board's PATH"),
                "toolkit": nvcc}
    cmake_version = re.search(r"cmake version (\S+)", sections.get("cmake", ""))
    uname = sections.get("uname", "").split()
    from melt.hashing import file_sha256

    return {
        "schema_version": 1,
        "framework": "llama.cpp",
        "profile": prof.name,
        "abi": device.abi(),
        "key": key,
        "built_on": "device",
        "llama_cpp_commit": tree.commit,
        "llama_cpp_version": tree.version,
        "build_commit": flags.get("LLAMA_BUILD_COMMIT"),
        "source": tree.provenance(),
        "source_archive": {"file": archive.name, "sha256": file_sha256(archive)},
        "cmake_flags": flags,
        "toolchain_file": None,
        "targets": [t for t in prof.targets if t in targets],
        "compiler": cxx,
        "cuda": cuda,
        "cmake_version": cmake_version.group(1) if cmake_version else None,
        "build_machine": {"device": device.spec.name, "address": device.transport.address,
                          "system": uname[0] if uname else None, "machine": uname[-1] if uname else None},
        "jobs": jobs,
        "built_at": _now(),
        "build_seconds": round(seconds, 1),
        "melt_version": melt_version,
        "binaries": {},  # filled in by _publish, from the copies' sha256 on the board
    }


def _publish(device: Any, paths: _Paths, have: list[str], todo: list[str], info: dict[str, Any],
             prof: Profile) -> None:
    """Make the build folder: binaries, log, then build.json; it appears by one rename."""
    q = shlex.quote
    tmp = f"{paths.root}/.tmp-{Path(paths.final).name}-{os.getpid()}"
    copy = " && ".join([f"cp -p {q(paths.final + '/bin/' + n)} {q(tmp + '/bin/' + n)}" for n in have]
                       + [f"cp -p {q(paths.cmake + '/bin/' + n)} {q(tmp + '/bin/' + n)}" for n in todo])
    r = device.transport.shell(
        f"set -e; rm -rf {q(tmp)}; mkdir -p {q(tmp)}/bin; {copy}; "
        f"cat {q(paths.final + '/build.log')} {q(paths.log)} > {q(tmp + '/build.log')} 2>/dev/null || "
        f"cp {q(paths.log)} {q(tmp + '/build.log')}; cd {q(tmp)}/bin && sha256sum -- *",
        check=False, timeout=300)
    if r.returncode != 0:
        missing = [n for n in todo if n not in r.stdout]
        raise BuildError(f"build on {device.spec.name} finished without {', '.join(missing) or 'its binaries'}: "
                         f"{(r.stderr or r.stdout).strip()[-300:]}")
    digests = {}
    for line in r.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and re.fullmatch(r"[0-9a-f]{64}", parts[0]):
            digests[parts[1].lstrip("*")] = parts[0]
    info["binaries"] = {n: {"file": f"bin/{n}", "sha256": digests.get(n)} for n in sorted(have + todo)}
    done_all = all(t in info["binaries"] for t in prof.targets)
    # build.json is the completion mark: written last, inside the folder that the rename shows
    r = device.transport.shell(
        f"set -e; printf '%s\\n' {q(json.dumps(info, indent=2))} > {q(tmp + '/build.json')}; "
        f"rm -rf {q(paths.final + '.old')}; if [ -d {q(paths.final)} ]; then mv {q(paths.final)} "
        f"{q(paths.final + '.old')}; fi; mv {q(tmp)} {q(paths.final)}; rm -rf {q(paths.final + '.old')}; "
        + (f"rm -rf {q(paths.work)}" if done_all else f": > {q(paths.log)}"),
        check=False, timeout=120)
    if r.returncode != 0:
        raise BuildError(f"could not publish the build on {device.spec.name}: {(r.stderr or r.stdout).strip()[-300:]}")


def _cmake_vars(text: str, lang: str) -> dict[str, str | None]:
    """Compiler id, version and path from lines of CMake's ``CMake<LANG>Compiler.cmake``."""
    found: dict[str, str | None] = {"id": None, "version": None, "path": None}
    for field, suffix in (("id", "_ID"), ("version", "_VERSION"), ("path", "")):
        match = re.search(rf'^set\(CMAKE_{lang}_COMPILER{suffix} "([^"]*)"\)', text, re.M)
        if match:
            found[field] = match.group(1)[:300]
    return found


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def check_board_framework(name: str) -> None:
    """Raise :class:`BuildError` unless framework ``name`` can be built on a board (llama.cpp)."""
    if name != "llama.cpp":
        raise BuildError(f"build_on: device builds llama.cpp only; {name} is built on this machine "
                         "(set build_on: host)")

"""The MLC-LLM driver: headless runs of MLC's chat CLI, one workload kind.

``generate``
    One prompt through MLC's chat CLI, fed on its standard input by melt's
    small ``mlc-run`` script (prompt, ``/stats``, ``/exit``: no screen taps,
    no keyboard). Params: ``prompt``, ``n_predict`` (the CLI's
    ``--max-gen-len``), ``device`` (MLC's runtime device: ``auto``,
    ``opencl``, ``vulkan``, ``metal``, ``cuda``, ``cpu``), ``timeout_s``;
    ``ctx_size`` and ``seed`` are accepted and left to the model's compiled
    config, ``threads`` and a non-zero ``temperature`` are refused.
    Metrics come from the ``/stats`` line, read by the ``mlc-stats`` parser:
    ``prefill_tps`` and ``decode_tps``. MLC prints no token counts or times
    there, so none are reported.

Profiles come from ``frameworks/mlc-llm/recipe.yaml``. The MLC toolchain is
not on PyPI, so on most machines only the ``stand-in`` profile builds: a
stand-in chat CLI that prints MLC's real output format with rates from real
work (llama.cpp's ``llama-completion``). Its builds say ``stand_in: true``
in their provenance and the runner marks their results simulated.

The stand-in's llama.cpp build follows the device it runs on
(:meth:`MlcLlm.device_profile`): ``stand-in`` becomes ``stand-in/arm64`` for
an arm64-v8a phone, ``stand-in/host`` for this machine. ``stand-in/PROFILE``
names a llama.cpp profile directly.
"""

from __future__ import annotations

import posixpath
import shutil
from pathlib import Path
from typing import Any, Mapping, Sequence

from melt.errors import BuildError, ConfigError, JobFailed, UnknownNameError
from melt.frameworks.base import Build, Invocation, OutputCallback

DEVICES = ("auto", "opencl", "vulkan", "metal", "cuda", "cpu")
RUNNER = "mlc-run"
CLI = "mlc_chat_cli"
# Generate-workload fields MLC's chat CLI has no flag for. ``ctx_size`` and
# ``seed`` are accepted so one experiment can hold both frameworks (the
# model's compiled config decides them); ``threads`` and a non-zero
# ``temperature`` are refused rather than silently ignored.
_FIXED = ("threads", "ctx_size", "seed", "temperature")


class MlcLlm:
    """Driver for MLC-LLM's chat CLI."""

    name = "mlc-llm"
    workload_kinds = ("generate",)

    def __init__(self) -> None:
        self._companions: tuple[str, ...] = ()  # extra binaries the last build needs beside the CLI

    # -- building -------------------------------------------------------------

    def build(
        self,
        profile: str = "stand-in",
        *,
        source: str | None = None,
        force: bool = False,
        on_output: OutputCallback | None = None,
        targets: Sequence[str] | None = None,
    ) -> Build:
        """The runtime for ``profile``, cached (``targets`` is accepted; MLC's binaries are fixed).

        A real MLC profile needs MLC's toolchain: when anything is missing a
        :class:`BuildError` names each missing piece and how to get it.
        ``stand-in`` builds llama.cpp (cached) and puts the stand-in CLI and
        ``mlc-run`` beside its ``llama-completion``.
        """
        from melt.frameworks.mlc.recipe import load_recipe

        recipe = load_recipe()
        name, _, llama_profile = profile.partition("/")
        prof = recipe.profile(name)
        if llama_profile and not prof.stand_in:
            raise BuildError(f"MLC-LLM ({profile}): only a stand-in profile names a llama.cpp profile "
                             f"after '/'; use {name}")
        problems = recipe.problems(name)
        if problems:
            raise BuildError(f"cannot build MLC-LLM ({profile}): " + "; ".join(problems))
        if not prof.stand_in:
            # The toolchain is present: MLC's runtime is built with its own CMake
            # project from an mlc-llm checkout, which melt does not pin yet.
            raise BuildError(
                f"MLC-LLM ({profile}): build {recipe.runtime.cmake_target} from your mlc-llm checkout "
                "(cmake --build build --target " + recipe.runtime.cmake_target + ") and pass its folder "
                "as frameworks[].binaries (it must hold mlc_chat_cli)")
        from melt.frameworks.llamacpp.driver import LlamaCpp

        if not llama_profile:  # built without a device (melt build): for this machine
            llama_profile = prof.llamacpp_profile if prof.llamacpp_profile not in (None, "auto") else "host"
        llama = LlamaCpp().build(llama_profile, source=source, force=force, on_output=on_output)
        return self._stand_in(llama, name)

    def device_profile(self, profile: str, kind: str, abi: str | None, build_profile: str = "auto") -> str:
        """The profile to build for a device of ``kind`` whose CPU ABI is ``abi``.

        A stand-in whose recipe says ``llamacpp_profile: auto`` gets the
        llama.cpp build that device runs: ``build_profile`` (the device
        config's) unless it is ``auto``, else the one llama.cpp's
        ``auto_profile`` picks by ABI (``stand-in`` -> ``stand-in/arm64`` on
        an arm64-v8a phone). Other profiles, and ``stand-in/PROFILE``, are
        returned as they are. Raises :class:`BuildError` when no llama.cpp
        profile for the ABI can be built here.
        """
        from melt.frameworks.llamacpp.driver import LlamaCpp
        from melt.frameworks.mlc.recipe import load_recipe

        if "/" in profile:
            return profile
        prof = load_recipe().profile(profile)
        if not prof.stand_in:
            return profile
        llama = prof.llamacpp_profile or "auto"
        if llama == "auto":
            llama = build_profile
        if llama == "auto":
            llama = LlamaCpp().auto_profile(kind, abi) if abi or kind == "local" else "host"
        return f"{profile}/{llama}"

    def _stand_in(self, llama: Build, profile: str) -> Build:
        from melt.store.paths import cache_dir

        completion = llama.binaries.get("llama-completion")
        if completion is None:
            raise BuildError(f"the llama.cpp build in {llama.dir} has no llama-completion")
        folder = cache_dir() / "builds" / "mlc-llm" / f"{profile}-{Path(llama.dir).name}"
        files = {CLI: _script("mlc_chat_cli.sh"), RUNNER: _script("mlc-run.sh"), "llama-completion": completion}
        bin_dir = folder / "bin"
        bin_dir.mkdir(parents=True, exist_ok=True)
        binaries = {}
        for name, src in files.items():
            dest = bin_dir / name
            if not dest.exists() or dest.read_bytes() != src.read_bytes():
                tmp = dest.with_name(f".{name}.tmp")
                shutil.copyfile(src, tmp)
                tmp.chmod(0o755)
                tmp.replace(dest)
            binaries[name] = dest
        self._companions = ("llama-completion",)
        provenance = {
            "framework": self.name,
            "profile": profile,
            "stand_in": True,
            "stand_in_note": "not MLC-LLM: MLC's output format, rates from llama.cpp's llama-completion",
            "llama.cpp": llama.provenance,
        }
        if llama.provenance.get("abi"):
            provenance["abi"] = llama.provenance["abi"]
        return Build(dir=folder, bin_dir=bin_dir, binaries=binaries, provenance=provenance, cached=llama.cached)

    def prebuilt(self, folder: Path) -> Build:
        """A folder holding MLC's ``mlc_chat_cli`` built elsewhere (``mlc-run`` is added)."""
        from melt.hashing import file_sha256

        folder = Path(folder).expanduser().resolve()
        cli = folder / CLI
        if not cli.is_file():
            raise BuildError(f"no {CLI} in {folder}")
        binaries = {CLI: cli, RUNNER: _script("mlc-run.sh")}
        self._companions = ()
        provenance = {"framework": self.name, "profile": "prebuilt", "prebuilt_dir": str(folder),
                      "binaries": {CLI: {"file": str(cli), "sha256": file_sha256(cli)}}}
        return Build(dir=folder, bin_dir=folder, binaries=binaries, provenance=provenance, cached=True)

    def profiles(self) -> list[str]:
        from melt.frameworks.mlc.recipe import load_recipe

        return sorted(load_recipe().profiles)

    def binaries_for(self, kind: str) -> list[str]:
        """What a kind runs: the CLI, ``mlc-run``, and what the last build needs beside them."""
        self._check_kind(kind)
        return [CLI, RUNNER, *self._companions]

    # -- params and commands --------------------------------------------------

    def validate_params(self, kind: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """``params`` with defaults filled in; :class:`ConfigError` on a bad value."""
        self._check_kind(kind)
        known = {"prompt", "n_predict", "device", "timeout_s", *_FIXED}
        for key in params:
            if key not in known:
                raise UnknownNameError("mlc-llm generate parameter", str(key), sorted(known))
        out = {"prompt": params.get("prompt") or "The quick brown fox jumps over the lazy dog.",
               "n_predict": params.get("n_predict", 128), "device": params.get("device") or "auto",
               "timeout_s": params.get("timeout_s") or 600.0}
        problems = []
        if not isinstance(out["prompt"], str) or "\n" in out["prompt"] or "\r" in out["prompt"]:
            problems.append("prompt: must be one line of text (the chat CLI reads a prompt a line)")
        elif out["prompt"].startswith("/"):
            problems.append("prompt: must not start with '/' (the chat CLI reads that as a command)")
        if isinstance(out["n_predict"], bool) or not isinstance(out["n_predict"], int) or out["n_predict"] < 1:
            problems.append(f"n_predict: must be an integer >= 1, got {out['n_predict']!r}")
        if out["device"] not in DEVICES:
            problems.append(f"device: must be one of {', '.join(DEVICES)}, got {out['device']!r}")
        if params.get("threads") is not None:
            problems.append("threads: MLC's chat CLI chooses its own threads; leave it out")
        if params.get("temperature") not in (None, 0, 0.0):
            problems.append("temperature: MLC's chat CLI takes the model's generation config; leave it out")
        if problems:
            raise ConfigError("mlc-llm generate params", problems)
        return out

    def invocation(
        self, kind: str, params: Mapping[str, Any], *, bin_dir: str, model_path: str
    ) -> Invocation:
        """``sh mlc-run CLI MODEL PROMPT N DEVICE``; every argument is quoted by the transport.

        ``sh`` runs the script because Android has no ``/bin/sh`` for a ``#!`` line.
        """
        p = self.validate_params(kind, params)
        argv = ("sh", posixpath.join(bin_dir, RUNNER), posixpath.join(bin_dir, CLI), model_path,
                p["prompt"], str(p["n_predict"]), p["device"])
        return Invocation(argv=argv, env={"LD_LIBRARY_PATH": bin_dir}, timeout_s=float(p["timeout_s"]))

    # -- metrics --------------------------------------------------------------

    def parse_metrics(
        self, kind: str, params: Mapping[str, Any], stdout: str, stderr: str, returncode: int
    ) -> dict[str, float]:
        """``prefill_tps`` and ``decode_tps`` from the last ``/stats`` report.

        Raises :class:`JobFailed` on a non-zero exit or when no stats were printed.
        """
        from melt.frameworks.llamacpp.driver import _cause_line, _exit_text, _last_line, _positive
        from melt.parsers.mlc import parse_mlc_stats

        self._check_kind(kind)
        if returncode != 0:
            raise JobFailed(f"{CLI} {_exit_text(returncode)}: {_cause_line(stderr, stdout)}")
        records = [r for r in parse_mlc_stats(stdout) if "decode_tps" in r]
        if not records:
            raise JobFailed(f"no /stats line from {CLI}: {_last_line(stdout, stderr)}")
        last = records[-1]
        metrics = {"decode_tps": _positive(last["decode_tps"], "decode tok/s")}
        if last.get("prefill_tps") is not None:
            metrics["prefill_tps"] = _positive(last["prefill_tps"], "prefill tok/s")
        return metrics

    def _check_kind(self, kind: str) -> None:
        if kind not in self.workload_kinds:
            raise UnknownNameError("mlc-llm workload kind", kind, list(self.workload_kinds))


def _script(name: str) -> Path:
    return Path(__file__).resolve().parent / "device" / name

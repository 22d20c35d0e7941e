"""The llama.cpp driver: builds, command lines and metrics for two workload kinds.

``bench``
    ``llama-bench -o json``. Params: ``n_prompt``, ``n_gen``, ``threads``,
    ``batch``, ``depth``, ``repetitions``, ``timeout_s``. A prompt test row
    (``n_prompt > 0, n_gen = 0``) gives ``prefill_tps``, a generation row
    (``n_gen > 0``) gives ``decode_tps``; each with ``*_stddev``.

``generate``
    ``llama-completion`` on a text prompt, EOS ignored so exactly
    ``n_predict`` tokens are produced. Params: ``prompt``, ``n_predict``,
    ``threads``, ``ctx_size``, ``seed``, ``temperature``, ``timeout_s``.
    Metrics come from llama.cpp's timing lines: ``load_ms``, ``prompt_ms``,
    ``prefill_tps``, ``decode_ms``, ``decode_tps``, ``ttft_est_ms``,
    ``prompt_tokens``, ``gen_tokens``, ``total_ms``.

    ``ttft_est_ms`` is an estimate of the time to first token, computed, not
    measured: ``prompt_ms`` + one mean decode step (``decode_ms / gen_tokens``).
    Model loading is excluded (``load_ms``). A measured ``ttft_ms`` comes
    from the streamed kinds below. ``gen_tokens`` counts decode runs, which is
    ``n_predict - 1``: the first token comes from the prefill's logits.

``serve``, ``conversation``, ``sustained``
    ``llama-server`` on the device, driven from the host through a forwarded
    port with streamed completions (see :mod:`melt.frameworks.llamacpp.served`
    and, for the metrics, :mod:`melt.frameworks.llamacpp.stream_metrics`).
    The job's output is the client's transcript (JSON), not the server's.

The driver never runs anything: :meth:`LlamaCpp.invocation` returns an
:class:`~melt.frameworks.base.Invocation` for the runner to execute, and
:meth:`LlamaCpp.parse_metrics` reads what it left. A run that failed, or
whose output lacks the numbers, raises :class:`melt.errors.JobFailed`; a
missing number is never reported as zero.
"""

from __future__ import annotations

import math
import posixpath
import re
import signal
from functools import partial
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from melt.errors import BuildError, ConfigError, JobFailed, UnknownNameError
from melt.frameworks.base import Build, Invocation, OutputCallback, ServedInvocation

_ParamSpec = tuple[type, Any, Callable[[Any], bool], str]  # type, default, check, rule


def _at_least(n: float) -> Callable[[Any], bool]:
    return lambda v: v >= n


_ANY: Callable[[Any], bool] = lambda v: True  # noqa: E731

# kind -> param -> (type, default, check, rule shown when the check fails).
# A default of None means "leave it to llama.cpp".
PARAMS: dict[str, dict[str, _ParamSpec]] = {
    "bench": {
        "n_prompt": (int, 512, _at_least(0), "an integer >= 0"),
        "n_gen": (int, 128, _at_least(0), "an integer >= 0"),
        "threads": (int, None, _at_least(1), "an integer >= 1"),
        "batch": (int, None, _at_least(1), "an integer >= 1"),
        "depth": (int, 0, _at_least(0), "an integer >= 0"),
        "repetitions": (int, 5, _at_least(1), "an integer >= 1"),
        "timeout_s": (float, 1800.0, _at_least(1), "a number of seconds >= 1"),
    },
    "generate": {
        "prompt": (str, "The quick brown fox jumps over the lazy dog.", lambda v: v != "",
                   "non-empty text"),
        # >= 2: with one token there is no decode step to time.
        "n_predict": (int, 128, _at_least(2), "an integer >= 2"),
        "threads": (int, None, _at_least(1), "an integer >= 1"),
        "ctx_size": (int, 4096, _at_least(16), "an integer >= 16"),
        "seed": (int, 42, _at_least(0), "an integer >= 0"),
        "temperature": (float, 0.0, _at_least(0), "a number >= 0"),
        "timeout_s": (float, 600.0, _at_least(1), "a number of seconds >= 1"),
    },
}

_SERVER_PARAMS: dict[str, _ParamSpec] = {
    "threads": (int, None, _at_least(1), "an integer >= 1"),
    "ctx_size": (int, 4096, _at_least(16), "an integer >= 16"),
    "n_predict": (int, 64, _at_least(2), "an integer >= 2"),
    "temperature": (float, 0.0, _at_least(0), "a number >= 0"),
    "seed": (int, 42, _at_least(0), "an integer >= 0"),
    "ignore_eos": (bool, False, _ANY, "true or false"),
    "cache_prompt": (bool, True, _ANY, "true or false"),
    "startup_timeout_s": (float, 120.0, _at_least(1), "a number of seconds >= 1"),
    "stall_timeout_s": (float, 60.0, _at_least(0.1), "a number of seconds >= 0.1"),
    "timeout_s": (float, 1800.0, _at_least(1), "a number of seconds >= 1"),
}
PARAMS["serve"] = {
    **_SERVER_PARAMS,
    "prompt": (str, "The quick brown fox jumps over the lazy dog.", lambda v: v != "", "non-empty text"),
    "requests": (int, 3, _at_least(1), "an integer >= 1"),
    "concurrency": (int, 1, _at_least(1), "an integer >= 1"),
}
PARAMS["conversation"] = {
    **_SERVER_PARAMS,
    "conversation": (int, None, _at_least(0), "a conversation index >= 0"),
    "sample": (int, None, _at_least(1), "an integer >= 1"),
    "turns": (int, None, _at_least(1), "an integer >= 1"),
}
PARAMS["sustained"] = {
    **_SERVER_PARAMS,
    "n_predict": (int, 128, _at_least(2), "an integer >= 2"),
    "duration_s": (float, 60.0, _at_least(1), "a number of seconds >= 1"),
    "window_s": (float, 5.0, _at_least(0.1), "a number of seconds >= 0.1"),
}
PARAMS["quality"] = {
    "text": (str, "kjv-genesis", lambda v: v != "", "a shipped text's name or a file path"),
    "ctx": (int, 512, _at_least(16), "an integer >= 16"),
    "chunks": (int, None, _at_least(1), "an integer >= 1"),
    "max_scored_tokens": (int, 512, _at_least(1), "an integer >= 1"),
    "reference": (str, None, lambda v: v != "", "'host' or a model name of the experiment"),
    "threads": (int, None, _at_least(1), "an integer >= 1"),
    "timeout_s": (float, 1800.0, _at_least(1), "a number of seconds >= 1"),
}
#: kinds that run llama-server and a host-side client
SERVED_KINDS = ("serve", "conversation", "sustained")

BINARIES: dict[str, tuple[str, ...]] = {
    "bench": ("llama-bench",), "generate": ("llama-completion",),
    **{kind: ("llama-server",) for kind in SERVED_KINDS}, "quality": ("llama-perplexity",),
}


class LlamaCpp:
    """Driver for llama.cpp (``llama-bench``, ``llama-completion``, ``llama-server``)."""

    name = "llama.cpp"
    workload_kinds = ("bench", "generate", *SERVED_KINDS, "quality")

    # -- building -------------------------------------------------------------

    def build(
        self,
        profile: str = "host",
        *,
        source: str | None = None,
        force: bool = False,
        on_output: OutputCallback | None = None,
        targets: Sequence[str] | None = None,
    ) -> Build:
        """Build (or reuse from the cache) the binaries for ``profile``.

        ``targets``: the binaries needed (default: all but the recipe's on-demand
        ones). See :func:`melt.frameworks.llamacpp.build.build_llamacpp`; raises
        :class:`melt.errors.BuildError`.
        """
        from melt.frameworks.llamacpp.build import build_llamacpp

        return build_llamacpp(profile, source=source, force=force, on_output=on_output, targets=targets)

    def prebuilt(self, folder: Path) -> Build:
        """Binaries a user built elsewhere (e.g. with their own NDK setup), used as they are.

        Raises :class:`BuildError` naming what is missing. Provenance records the
        folder and each binary's sha256, since no build flags are known.
        """
        from melt.hashing import file_sha256

        folder = Path(folder).expanduser().resolve()
        names = sorted({b for kind in self.workload_kinds for b in BINARIES[kind]})
        found = {n: folder / n for n in names if (folder / n).is_file()}
        if not found:
            raise BuildError(f"no llama.cpp binaries ({', '.join(names)}) in {folder}")
        provenance = {
            "framework": self.name,
            "profile": "prebuilt",
            "prebuilt_dir": str(folder),
            "binaries": {n: {"file": str(p), "sha256": file_sha256(p)} for n, p in found.items()},
        }
        return Build(dir=folder, bin_dir=folder, binaries=found, provenance=provenance, cached=True)

    def auto_profile(self, kind: str, abi: str | None) -> str:
        """The build profile for a device of ``kind`` ("android", "local") whose CPU ABI is ``abi``.

        See :meth:`melt.frameworks.llamacpp.recipe.Recipe.auto_profile`; raises
        :class:`BuildError` when no fitting toolchain is present.
        """
        from melt.frameworks.llamacpp.recipe import load_recipe

        return load_recipe().auto_profile(kind, abi)

    def profiles(self) -> list[str]:
        """Names of the build profiles the recipe defines."""
        from melt.frameworks.llamacpp.recipe import load_recipe

        return sorted(load_recipe().profiles)

    def binaries_for(self, kind: str) -> list[str]:
        """Names of the binaries (under a build's ``bin_dir``) a kind runs."""
        self._check_kind(kind)
        return list(BINARIES[kind])

    # -- params and commands --------------------------------------------------

    def validate_params(self, kind: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """Check ``params`` for ``kind`` and return them with defaults filled in.

        Raises :class:`UnknownNameError` for an unknown kind or parameter (the
        message lists the known ones) and :class:`ConfigError` for a value of
        the wrong type or range. Lists are refused: the runner expands them.
        """
        self._check_kind(kind)
        spec = PARAMS[kind]
        for key in params:
            if key not in spec:
                raise UnknownNameError(f"llama.cpp {kind} parameter", str(key), list(spec))
        out: dict[str, Any] = {}
        problems = []
        for key, (typ, default, check, rule) in spec.items():
            if key not in params or params[key] is None:
                out[key] = default
                continue
            value = _coerce(params[key], typ)
            if value is None or not check(value):
                problems.append(f"{key}: must be {rule}, got {params[key]!r}")
            else:
                out[key] = value
        if kind == "quality" and not problems:
            from melt.frameworks.llamacpp.quality import chunk_count

            chunk_count(out)
        if kind == "bench" and not problems and out["n_prompt"] == 0 and out["n_gen"] == 0:
            problems.append("n_prompt, n_gen: at least one must be > 0")
        if kind == "conversation" and not problems:
            from melt.prompts import pick_conversations

            if out["conversation"] is None and out["sample"] is None:
                out["conversation"] = 0
            try:
                pick_conversations(index=out["conversation"], sample=out["sample"], seed=out["seed"])
            except ValueError as exc:
                problems.append(f"conversation: {exc}")
        if problems:
            raise ConfigError(f"llama.cpp {kind} params", problems)
        return out

    def job_inputs(self, kind: str, params: Mapping[str, Any], *, model_file: Path,
                   model_files: Mapping[str, Path], base_dir: Path,
                   say: Callable[[str], None] | None = None) -> dict[str, Path]:
        """Host files a job needs on the device besides binaries and model, by role.

        A quality job needs its text, or with a reference the reference's base
        logits (computed on this machine, see :mod:`melt.frameworks.llamacpp.quality`).
        ``model_files`` maps the experiment's model names to their files.
        """
        if kind != "quality":
            return {}
        from melt.frameworks.llamacpp import quality

        p = self.validate_params(kind, params)
        text = quality.resolve_text(p["text"], base_dir)
        chunks = quality.chunk_count(p)
        if p["reference"] is None:
            return {"text": text}
        if p["reference"] == "host":
            reference = model_file
        elif p["reference"] in model_files:
            reference = Path(model_files[p["reference"]])
        else:
            raise ConfigError("quality workload", [f"reference: '{p['reference']}' is neither 'host' nor a "
                                                   f"model of the experiment ({', '.join(model_files)})"])
        if quality.other_tokenizer(model_file, reference):
            return {"text": text}
        build = self.build("host", targets=["llama-perplexity"])
        base = quality.base_logits(reference, text, p["ctx"], chunks, build_bin=build.binaries["llama-perplexity"],
                                   build_key=str(build.provenance.get("key")), say=say)
        return {"base": base}

    def invocation(
        self, kind: str, params: Mapping[str, Any], *, bin_dir: str, model_path: str,
        inputs: Mapping[str, str] | None = None,
    ) -> Invocation:
        """The command for one job; ``bin_dir``, ``model_path`` and ``inputs`` are device paths."""
        p = self.validate_params(kind, params)
        if kind == "quality":
            from melt.frameworks.llamacpp.quality import device_argv

            argv = device_argv(p, bin_dir=bin_dir, model_path=model_path, inputs=inputs or {})
            return Invocation(argv=tuple(argv), env={"LD_LIBRARY_PATH": bin_dir}, timeout_s=float(p["timeout_s"]))
        if kind in SERVED_KINDS:
            return self._served_invocation(kind, p, bin_dir=bin_dir, model_path=model_path)
        if kind == "bench":
            argv = [
                posixpath.join(bin_dir, "llama-bench"),
                "-m", model_path,
                "-p", str(p["n_prompt"]),
                "-n", str(p["n_gen"]),
                "-d", str(p["depth"]),
                "-r", str(p["repetitions"]),
                "-o", "jsonl",  # one object per line: several runs' output concatenates cleanly
            ]
            if p["threads"] is not None:
                argv += ["-t", str(p["threads"])]
            if p["batch"] is not None:
                argv += ["-b", str(p["batch"])]
        else:
            argv = [
                posixpath.join(bin_dir, "llama-completion"),
                "-m", model_path,
                "-p", p["prompt"],
                "-n", str(p["n_predict"]),
                "-c", str(p["ctx_size"]),
                "-s", str(p["seed"]),
                "--temp", _num(p["temperature"]),
                # a fixed token count, a run that ends by itself, plain logs
                "--ignore-eos",
                "-no-cnv",
                "--no-display-prompt",
                "--simple-io",
                "--log-colors", "off",
            ]
            if p["threads"] is not None:
                argv += ["-t", str(p["threads"])]
        return Invocation(
            argv=tuple(argv),
            env={"LD_LIBRARY_PATH": bin_dir},
            timeout_s=float(p["timeout_s"]),
        )

    def _served_invocation(self, kind: str, p: Mapping[str, Any], *, bin_dir: str,
                           model_path: str) -> ServedInvocation:
        """``llama-server`` on a free loopback port of the device, and the host client for ``kind``."""
        from melt.frameworks.llamacpp.served import run_client

        slots = p["concurrency"] if kind == "serve" else 1
        argv = [
            posixpath.join(bin_dir, "llama-server"),
            "-m", model_path,
            "--host", "127.0.0.1",
            "--port", "0",  # the server picks a free port and prints it
            "-c", str(p["ctx_size"] * slots),  # the context is shared by the slots
            "-np", str(slots),
            "--no-webui",
        ]
        if p["threads"] is not None:
            argv += ["-t", str(p["threads"])]
        return ServedInvocation(
            argv=tuple(argv),
            env={"LD_LIBRARY_PATH": bin_dir},
            timeout_s=float(p["timeout_s"]),
            client=partial(run_client, kind, dict(p)),
        )

    def phased_invocations(
        self, kind: str, params: Mapping[str, Any], *, bin_dir: str, model_path: str,
        inputs: Mapping[str, str] | None = None,
    ) -> list[tuple[str, Invocation]]:
        """The job for on-device telemetry: one process (``"run"``) for both kinds.

        melt's patched llama.cpp prints a mark at each prefill and decode
        boundary (per timed repetition for llama-bench), so one process gives
        both phases' windows and the model is loaded once; without marks the
        telemetry falls back to walking back from the process's exit.
        """
        return [("run", self.invocation(kind, params, bin_dir=bin_dir, model_path=model_path, inputs=inputs))]

    # -- metrics --------------------------------------------------------------

    def parse_metrics(
        self, kind: str, params: Mapping[str, Any], stdout: str, stderr: str, returncode: int
    ) -> dict[str, float]:
        """Metrics of one finished job.

        Raises :class:`JobFailed` when the process exited non-zero (the reason
        holds the exit code and the last stderr line), when the expected
        numbers are missing, or when they are not positive finite numbers.
        """
        p = self.validate_params(kind, params)
        tool = BINARIES[kind][0]
        if kind in SERVED_KINDS:
            return _served_metrics(p, stdout)
        if returncode != 0:
            raise JobFailed(f"{tool} {_exit_text(returncode)}: {_cause_line(stderr, stdout)}")
        if kind == "bench":
            return _bench_metrics(p, stdout, stderr)
        if kind == "quality":
            from melt.frameworks.llamacpp.quality import metrics

            return metrics(stdout, stderr)
        return _generate_metrics(stdout, stderr)

    def _check_kind(self, kind: str) -> None:
        if kind not in self.workload_kinds:
            raise UnknownNameError("llama.cpp workload kind", kind, list(self.workload_kinds))


def _bench_metrics(p: Mapping[str, Any], stdout: str, stderr: str) -> dict[str, float]:
    from melt.parsers.llama_bench import parse_llama_bench

    rows = parse_llama_bench(stdout) or parse_llama_bench(f"{stdout}\n{stderr}")
    if not rows:
        raise JobFailed(f"no llama-bench results in output: {_last_line(stderr, stdout)}")
    metrics: dict[str, float] = {}
    wanted = {"prefill": p["n_prompt"] > 0, "decode": p["n_gen"] > 0}
    for row in rows:
        n_prompt, n_gen = row.get("n_prompt") or 0, row.get("n_gen") or 0
        phase = "prefill" if n_prompt > 0 and n_gen == 0 else "decode" if n_gen > 0 else None
        if phase is None or f"{phase}_tps" in metrics:
            continue
        metrics[f"{phase}_tps"] = _positive(row.get("avg_tps"), f"{phase} tokens/s")
        std = row.get("stddev_tps")
        samples = row.get("samples_ns")
        repeated = len(samples) > 1 if samples else p["repetitions"] > 1  # one sample has no spread
        if repeated and std is not None and math.isfinite(std) and std >= 0:
            metrics[f"{phase}_tps_stddev"] = float(std)
    for phase, needed in wanted.items():
        if needed and f"{phase}_tps" not in metrics:
            test = "pp" if phase == "prefill" else "tg"
            raise JobFailed(f"llama-bench printed no {test} row ({phase} speed) in its results")
    return metrics


def _generate_metrics(stdout: str, stderr: str) -> dict[str, float]:
    from melt.parsers.llamacpp import parse_timings

    blocks = parse_timings(stderr) or parse_timings(stdout)
    if not blocks:
        raise JobFailed(f"no timing lines in output: {_last_line(stderr, stdout)}")
    t = blocks[-1]
    if t.get("interrupted"):
        raise JobFailed("llama-completion was interrupted before it finished")
    needed = ("load_ms", "prompt_ms", "prompt_tokens", "decode_ms", "gen_tokens", "total_ms")
    missing = [k for k in needed if t.get(k) is None]
    if missing:
        raise JobFailed(f"timing lines incomplete, no {', '.join(missing)}: {_last_line(stderr, stdout)}")
    prompt_ms = _positive(t["prompt_ms"], "prompt eval time")
    decode_ms = _positive(t["decode_ms"], "eval time")
    prompt_tokens = _positive(t["prompt_tokens"], "prompt tokens")
    gen_tokens = _positive(t["gen_tokens"], "eval runs")
    prefill_tps = t.get("prefill_tps") or 1000.0 * prompt_tokens / prompt_ms
    decode_tps = t.get("decode_tps") or 1000.0 * gen_tokens / decode_ms
    return {
        "load_ms": _non_negative(t["load_ms"], "load time"),
        "prompt_ms": prompt_ms,
        "prefill_tps": _positive(prefill_tps, "prefill tokens/s"),
        "decode_ms": decode_ms,
        "decode_tps": _positive(decode_tps, "decode tokens/s"),
        "ttft_est_ms": prompt_ms + decode_ms / gen_tokens,
        "prompt_tokens": prompt_tokens,
        "gen_tokens": gen_tokens,
        "total_ms": _positive(t["total_ms"], "total time"),
    }


def _served_metrics(p: Mapping[str, Any], stdout: str) -> dict[str, float]:
    import json

    from melt.frameworks.llamacpp.stream_metrics import stream_metrics

    try:
        transcript = json.loads(stdout)
    except ValueError:
        raise JobFailed(f"no client transcript in the output: {_last_line(stdout)}") from None
    if not isinstance(transcript, dict):
        raise JobFailed("the client transcript is not a JSON object")
    return stream_metrics(transcript)


def _positive(value: Any, what: str) -> float:
    number = _coerce(value, float)
    if number is None or not math.isfinite(number) or number <= 0:
        raise JobFailed(f"{what} is not a positive number in the output: {value!r}")
    return number


def _non_negative(value: Any, what: str) -> float:
    number = _coerce(value, float)
    if number is None or not math.isfinite(number) or number < 0:
        raise JobFailed(f"{what} is not a number >= 0 in the output: {value!r}")
    return number


def _coerce(value: Any, typ: type) -> Any:
    if typ is bool:
        return value if isinstance(value, bool) else None
    if isinstance(value, bool):
        return None
    if typ is str:
        return value if isinstance(value, str) else None
    if typ is int:
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
        return None
    try:
        return float(value) if isinstance(value, (int, float, str)) else None
    except ValueError:
        return None


def _num(value: float) -> str:
    return f"{value:g}"


def _exit_text(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name} (exit code {returncode})"
    if returncode > 128:
        try:
            return f"exited with code {returncode} ({signal.Signals(returncode - 128).name})"
        except ValueError:
            pass
    return f"exited with code {returncode}"


_LOG_PREFIX = re.compile(r"^\d+\.\d+\.\d+\.\d+ [A-Z] ")  # llama.cpp log: time and level
_CAUSE = re.compile(r"\berror\b|\bfailed to\b", re.I)


def _cause_line(*texts: str) -> str:
    """The first line that names an error (the cause, not a later symptom), else the last line."""
    for text in texts:
        for line in (text or "").splitlines():
            if _CAUSE.search(line):
                return _LOG_PREFIX.sub("", line.strip())[:300]
    return _LOG_PREFIX.sub("", _last_line(*texts))


def _last_line(*texts: str) -> str:
    for text in texts:
        lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
        if lines:
            return lines[-1][:300]
    return "(no output)"

"""Quality jobs: llama.cpp's ``llama-perplexity`` on the device, with or without a reference.

Without a reference the device scores the text itself (``-f TEXT``). With
one, the reference's logits over the same text (``--kl-divergence-base``)
are computed once on this machine with the host build, cached by what
defines them (reference sha256, text sha256, ctx, chunks, build key) and
pushed like a model; the device then runs ``--kl-divergence`` against them
and needs no text (the base file holds the tokens). The host computes them
because they are the same for every device, because a phone's time and
disk are spared, and because the reference then comes from a backend that
is not the one under test.

Base files are large (about 0.5 MB per scored token for a 262k vocabulary),
so the scored tokens are bounded: ``max_scored_tokens`` (default 512)
limits ``chunks``.
"""

from __future__ import annotations

import json
import os
import posixpath
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping

from melt.errors import ConfigError, JobFailed
from melt.models.hashes import sha256_file
from melt.parsers.perplexity import parse_perplexity
from melt.store.paths import cache_dir

#: llama-perplexity prints its final KL-divergence statistics only from this many scored tokens
MIN_KLD_TOKENS = 100
DEFAULT_MAX_SCORED = 512


def scored_per_chunk(ctx: int) -> int:
    """Tokens llama-perplexity scores in one chunk: the second half (the first is context)."""
    return ctx - ctx // 2


def chunk_count(p: Mapping[str, Any]) -> int:
    """The chunks a job evaluates: ``chunks``, or as many as ``max_scored_tokens`` allows.

    Raises :class:`ConfigError` when the bound leaves no chunk, when ``chunks``
    exceeds it, or when a reference is set and fewer than 100 tokens are scored.
    """
    per = scored_per_chunk(p["ctx"])
    limit = p["max_scored_tokens"] // per
    chunks = p["chunks"] if p["chunks"] is not None else limit
    problems = []
    if chunks < 1:
        problems.append(f"max_scored_tokens: {p['max_scored_tokens']} is less than one chunk scores "
                        f"({per} tokens at ctx {p['ctx']})")
    elif chunks * per > p["max_scored_tokens"]:
        problems.append(f"chunks: {chunks} chunks of ctx {p['ctx']} score {chunks * per} tokens, over "
                        f"max_scored_tokens {p['max_scored_tokens']} (raise it to allow larger base logits)")
    elif p["reference"] is not None and chunks * per < MIN_KLD_TOKENS:
        problems.append(f"chunks: {chunks * per} scored tokens; llama-perplexity prints KL-divergence "
                        f"statistics only from {MIN_KLD_TOKENS}")
    if problems:
        raise ConfigError("llama.cpp quality params", problems)
    return chunks


def resolve_text(text: str, base_dir: Path) -> Path:
    """A shipped text's file, or ``text`` as a path (relative to the experiment's folder)."""
    from melt.texts import names, text_path

    if text in names():
        return text_path(text)
    path = Path(text).expanduser()
    path = path if path.is_absolute() else base_dir / path
    if not path.is_file():
        raise ConfigError("quality workload", [f"text: no shipped text or file '{text}' (shipped: "
                                               f"{', '.join(names())})"])
    return path


def other_tokenizer(model: Path, reference: Path) -> str | None:
    """Why ``model`` cannot be scored against ``reference``'s logits (another vocabulary), or ``None``.

    KL divergence compares two distributions over the same tokens; across
    tokenizers there is no such thing, so such a job reports perplexity only.
    """
    from melt.models.gguf_facts import gguf_facts

    a, b = gguf_facts(model), gguf_facts(reference)
    if a is None or b is None:
        return None  # llama-perplexity checks the vocabulary itself and fails with its reason
    if (a.architecture, a.vocab_size) != (b.architecture, b.vocab_size):
        return (f"KL divergence not measured: the reference is {b.architecture} with {b.vocab_size} tokens, "
                f"this model {a.architecture} with {a.vocab_size}; perplexity only")
    return None


def device_argv(p: Mapping[str, Any], *, bin_dir: str, model_path: str,
                inputs: Mapping[str, str]) -> list[str]:
    """The device's command: scoring the text, or against the staged base logits."""
    argv = [posixpath.join(bin_dir, "llama-perplexity"), "-m", model_path, "-c", str(p["ctx"])]
    if "base" in inputs:
        argv += ["--kl-divergence-base", inputs["base"], "--kl-divergence"]
    elif "text" in inputs:
        argv += ["-f", inputs["text"], "--chunks", str(chunk_count(p))]
    else:
        raise JobFailed("quality job without its text or base logits on the device")
    if p["threads"] is not None:
        argv += ["-t", str(p["threads"])]
    return argv


def base_logits(reference: Path, text: Path, ctx: int, chunks: int, *, build_bin: Path, build_key: str,
                say: Callable[[str], None] | None = None) -> Path:
    """The reference's cached base-logits file, computed with the host build when missing."""
    key = {"reference_sha256": sha256_file(reference), "text_sha256": sha256_file(text),
           "ctx": ctx, "chunks": chunks, "build": build_key}
    name = "-".join([key["reference_sha256"][:16], key["text_sha256"][:12], str(ctx), str(chunks), build_key])
    folder = cache_dir() / "quality" / name
    out = folder / "base.kld"
    if out.is_file() and (folder / "key.json").is_file():
        return out
    folder.mkdir(parents=True, exist_ok=True)
    if say:
        say(f"computing reference logits of {reference.name} on this machine ({chunks} chunks of {ctx})")
    fd, tmp = tempfile.mkstemp(prefix=".base-", dir=folder)
    os.close(fd)
    try:
        proc = subprocess.run([str(build_bin), "-m", str(reference), "-f", str(text), "-c", str(ctx),
                               "--chunks", str(chunks), "--kl-divergence-base", tmp],
                              capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise JobFailed(f"reference logits failed (exit {proc.returncode}): {tail[0]}")
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    ref = parse_perplexity(proc.stdout + proc.stderr)
    (folder / "key.json").write_text(json.dumps({**key, "reference_perplexity": ref.get("perplexity")},
                                                indent=2))
    return out


def metrics(stdout: str, stderr: str) -> dict[str, float]:
    """The job's quality figures; :class:`JobFailed` when llama-perplexity printed none."""
    m = parse_perplexity(stdout + "\n" + stderr)
    if not m:
        raise JobFailed("llama-perplexity printed no perplexity (text shorter than one chunk?)")
    return m

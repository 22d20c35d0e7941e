"""Quantization variants of a GGUF model, made with the build's own ``llama-quantize``.

The variant is written beside a sidecar (``OUT.melt.json``, see
:mod:`melt.models.provenance`) that says what it was made from: the source's
name, sha256 and file type, the target type, the exact command and the
llama.cpp build. A variant made from an already-quantized file records
``requantized_from``: its speed is real, its quality is not the original's.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from melt.errors import MeltError, UnknownNameError
from melt.frameworks.base import Build
from melt.models.gguf_facts import FILE_TYPES, GGUFError, read_gguf_facts
from melt.models.hashes import remember_sha256, sha256_file
from melt.models.provenance import write_provenance

#: Types ``--type`` accepts (llama-quantize's names for llama_ftype).
QUANT_TYPES = tuple(t for t in FILE_TYPES.values())
#: File types whose weights are not quantized (a variant from these is a first quantization).
UNQUANTIZED = {"F32", "F16", "BF16"}


class QuantizeError(MeltError):
    """llama-quantize failed, or its output is not the variant asked for."""


def quantize_model(
    src: Path,
    out: Path,
    qtype: str,
    *,
    build: Build,
    threads: int | None = None,
    timeout_s: float = 1800,
) -> dict:
    """Write the ``qtype`` variant of GGUF ``src`` to ``out``; returns its provenance.

    Raises ``UnknownNameError`` for an unknown type, ``QuantizeError`` when
    ``src`` is not GGUF or llama-quantize fails (its last line is in the
    message). ``out`` appears by one rename, never half-written.
    """
    qtype = qtype.upper()
    if qtype not in QUANT_TYPES:
        raise UnknownNameError("quantization type", qtype, list(QUANT_TYPES))
    src, out = Path(src).resolve(), Path(out).resolve()
    if src == out:
        raise QuantizeError("the output must be a different file than the source")
    try:
        facts = read_gguf_facts(src)
    except GGUFError as exc:
        raise QuantizeError(f"{src}: {exc}") from None
    tool = build.binaries.get("llama-quantize")
    if tool is None or not Path(tool).is_file():
        raise QuantizeError(f"this llama.cpp build ({build.dir}) has no llama-quantize; rebuild with melt build")
    requantize = facts.file_type not in UNQUANTIZED
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    argv = [str(tool), *(["--allow-requantize"] if requantize else []), str(src), str(tmp), qtype]
    if threads:
        argv.append(str(threads))
    start = time.perf_counter()
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s)
        if proc.returncode != 0:
            tail = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()][-1:] or [""]
            raise QuantizeError(f"llama-quantize exited {proc.returncode}: {tail[0][:300]}")
        made = read_gguf_facts(tmp)
        if made.file_type != qtype:
            raise QuantizeError(f"llama-quantize wrote file type {made.file_type}, not {qtype}")
        os.replace(tmp, out)
    except subprocess.TimeoutExpired:
        raise QuantizeError(f"llama-quantize ran past {timeout_s:.0f} s") from None
    except GGUFError as exc:
        raise QuantizeError(f"llama-quantize wrote an unreadable file: {exc}") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    seconds = time.perf_counter() - start
    out_sha = sha256_file(out)
    remember_sha256(out, out_sha)
    prov = {
        "made_by": "melt model quantize",
        "type": qtype,
        "source": {
            "path": str(src),
            "sha256": sha256_file(src),
            "name": facts.name,
            "file_type": facts.file_type,
            "size_bytes": facts.size_bytes,
        },
        "requantized_from": facts.file_type if requantize else None,
        "sha256": out_sha,
        "size_bytes": out.stat().st_size,
        "n_params": made.n_params,
        "command": ["llama-quantize", *argv[1:]],
        "llama_cpp": {k: build.provenance.get(k) for k in ("profile", "key", "llama_cpp_commit",
                                                           "llama_cpp_version")},
        "seconds": round(seconds, 2),
    }
    prov["command"] = [a.replace(str(tmp), str(out)) for a in prov["command"]]
    write_provenance(out, prov)
    return prov

"""Benchmark of resolving a model at real sizes: GGUF facts and sha256, first run and later runs.

Not a test: it prints the figures recorded in docs/benchmarks.md.

    python bench/bench_models.py [--gb 4] [--reps 5] [--old]

A GGUF of ``--gb`` GiB is generated in a temporary folder: Gemma 3's shape of
metadata (a 262,144-entry vocabulary with scores and types) and tensor infos,
then incompressible tensor data up to the size. Timed, with melt's memo in a
temporary cache folder:

- the first ``resolve_model()`` of a ``path:`` reference (facts from the
  header, sha256 of every byte);
- later ones (``--reps``): facts and sha256 come from the memo keyed by
  (path, size, mtime_ns); the target is <= 0.2 s;
- reading the facts from the header alone, without the memo;
- with ``--old``: counting parameters the way melt did before, with the gguf
  package's ``GGUFReader``, which decodes every vocabulary entry.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import machine, run  # bench/ is on sys.path when a bench runs

TARGET_S = 0.2


def write_big_gguf(path: Path, size: int) -> None:
    import gguf

    n_vocab, n_embd = 262_144, 640
    writer = gguf.GGUFWriter(str(path), "gemma3")
    writer.add_name("melt-bench-big")
    writer.add_context_length(32768)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(18)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    writer.add_tokenizer_model("llama")
    writer.add_token_list([f"tok{i:06d}" for i in range(n_vocab)])
    writer.add_token_scores([0.0] * n_vocab)
    writer.add_token_types([gguf.TokenType.NORMAL] * n_vocab)
    # Q8_0 blocks: 32 weights in 34 bytes; rows of n_embd weights.
    row_bytes = n_embd // 32 * 34
    rows = max(1, (size - 8 * 1024 * 1024) // row_bytes)
    writer.add_tensor_info("token_embd.weight", [rows, row_bytes], np.dtype(np.uint8), rows * row_bytes,
                           raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    block = os.urandom(64 << 20)
    with open(path, "ab") as fh:
        pad = (-fh.tell()) % 32
        fh.write(bytes(pad))
        left = rows * row_bytes
        while left > 0:
            fh.write(block[:min(len(block), left)])
            left -= len(block)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gb", type=float, default=4.0, help="size of the generated model, GiB")
    ap.add_argument("--reps", type=int, default=5, help="repetitions of the later resolves")
    ap.add_argument("--old", action="store_true", help="also time the gguf package's full reader (slow)")
    args = ap.parse_args()
    print(f"machine: {machine()}")
    tmp = Path(tempfile.mkdtemp(prefix="melt-bench-models-"))
    os.environ["MELT_CACHE_DIR"] = str(tmp / "cache")
    try:
        from melt.config.specs import ModelRef
        from melt.models.gguf_facts import read_gguf_facts
        from melt.runner.models import resolve_model

        big = tmp / "big.gguf"
        t = time.perf_counter()
        write_big_gguf(big, int(args.gb * (1 << 30)))
        size = big.stat().st_size
        print(f"generated {size / (1 << 30):.2f} GiB GGUF in {time.perf_counter() - t:.1f} s")
        ref = ModelRef(name="big", path=str(big))

        def resolve() -> float:
            t = time.perf_counter()
            r = resolve_model(ref, base=tmp, source="bench", index=0)
            assert r.n_params and r.facts and r.facts.vocab_size == 262_144
            return time.perf_counter() - t

        first = resolve()
        later = [resolve() for _ in range(args.reps)]
        header = []
        for _ in range(args.reps):
            t = time.perf_counter()
            facts = read_gguf_facts(big)
            header.append(time.perf_counter() - t)
        old = None
        if args.old:
            from gguf import GGUFReader

            t = time.perf_counter()
            sum(int(x.n_elements) for x in GGUFReader(str(big), "r").tensors)
            old = time.perf_counter() - t
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    med = statistics.median(later)
    print()
    print(f"{size / (1 << 30):.2f} GiB GGUF ({facts.n_params:,} weights, vocabulary {facts.vocab_size:,}); "
          f"medians over {args.reps}")
    print("| step | time s |")
    print("| --- | --- |")
    print(f"| first `resolve_model()` (facts + sha256 of {size / (1 << 30):.1f} GiB) | {first:.2f} |")
    print(f"| later `resolve_model()` (memo) | {med:.4f} ({min(later):.4f}-{max(later):.4f}) |")
    print(f"| facts from the header alone, no memo | {statistics.median(header):.4f} |")
    if old is not None:
        print(f"| before: gguf `GGUFReader` parameter count | {old:.2f} |")
    verdict = "holds" if med <= TARGET_S else "MISSED"
    print(f"target: a later resolve <= {TARGET_S} s: {verdict} ({med:.4f} s)")
    return 0 if med <= TARGET_S else 2


if __name__ == "__main__":
    run(main)

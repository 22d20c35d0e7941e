"""A tiny random-weight llama model that melt writes itself.

The file is a valid GGUF of architecture ``llama`` with a byte-level
SentencePiece-style vocabulary (``<unk>``, ``<s>``, ``</s>`` and the 256
byte tokens ``<0x00>``..``<0xFF>``), so any text tokenizes and llama.cpp
loads it without a model hub. Its outputs are noise; its speed is real, which
is what tests and demos need. The same arguments always give the same bytes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SPECIAL_TOKENS = ("<unk>", "<s>", "</s>")
N_VOCAB = len(SPECIAL_TOKENS) + 256


@dataclass(frozen=True)
class TinyShape:
    """Hyper-parameters of the tiny model (defaults give a file of about 300 KB)."""

    n_embd: int = 64
    n_layer: int = 2
    n_head: int = 4
    n_head_kv: int = 2
    n_ff: int = 192
    n_ctx: int = 2048

    def __post_init__(self) -> None:
        if min(self.n_embd, self.n_layer, self.n_head, self.n_head_kv, self.n_ff, self.n_ctx) < 1:
            raise ValueError("every tiny-model dimension must be positive")
        if self.n_embd % self.n_head or self.n_head % self.n_head_kv:
            raise ValueError("n_embd must divide by n_head, and n_head by n_head_kv")
        if (self.n_embd // self.n_head) % 2:
            raise ValueError("the head size (n_embd / n_head) must be even for RoPE")


def write_tiny_model(
    path: str | os.PathLike[str],
    *,
    seed: int = 0,
    shape: TinyShape | None = None,
    f16: bool = True,
    name: str = "melt-tiny",
) -> Path:
    """Write a tiny llama GGUF to ``path`` and return it.

    ``seed`` picks the random weights (same seed, same bytes, same sha256).
    ``f16`` stores the matrices in float16 (norms stay float32). Parent
    folders are created; an existing file is replaced atomically.
    Raises ``ValueError`` for an inconsistent ``shape``.
    """
    import gguf  # imported here: only this command needs it

    shape = shape or TinyShape()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    head_dim = shape.n_embd // shape.n_head
    n_kv = head_dim * shape.n_head_kv
    wtype = np.float16 if f16 else np.float32

    def matrix(rows: int, cols: int) -> np.ndarray:
        # numpy shape is (out, in); gguf stores it as ggml ne = (in, out).
        return (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(wtype)

    def norm() -> np.ndarray:
        return np.ones(shape.n_embd, dtype=np.float32)

    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    writer = gguf.GGUFWriter(str(tmp), "llama")
    writer.add_name(name)
    writer.add_context_length(shape.n_ctx)
    writer.add_embedding_length(shape.n_embd)
    writer.add_block_count(shape.n_layer)
    writer.add_feed_forward_length(shape.n_ff)
    writer.add_head_count(shape.n_head)
    writer.add_head_count_kv(shape.n_head_kv)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(N_VOCAB)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if f16 else gguf.LlamaFileType.ALL_F32)

    tokens = [*SPECIAL_TOKENS, *(f"<0x{b:02X}>" for b in range(256))]
    types = [
        gguf.TokenType.UNKNOWN,
        gguf.TokenType.CONTROL,
        gguf.TokenType.CONTROL,
        *([gguf.TokenType.BYTE] * 256),
    ]
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * N_VOCAB)
    writer.add_token_types(types)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)

    writer.add_tensor("token_embd.weight", matrix(N_VOCAB, shape.n_embd))
    for i in range(shape.n_layer):
        blk = f"blk.{i}"
        writer.add_tensor(f"{blk}.attn_norm.weight", norm())
        writer.add_tensor(f"{blk}.attn_q.weight", matrix(shape.n_embd, shape.n_embd))
        writer.add_tensor(f"{blk}.attn_k.weight", matrix(n_kv, shape.n_embd))
        writer.add_tensor(f"{blk}.attn_v.weight", matrix(n_kv, shape.n_embd))
        writer.add_tensor(f"{blk}.attn_output.weight", matrix(shape.n_embd, shape.n_embd))
        writer.add_tensor(f"{blk}.ffn_norm.weight", norm())
        writer.add_tensor(f"{blk}.ffn_gate.weight", matrix(shape.n_ff, shape.n_embd))
        writer.add_tensor(f"{blk}.ffn_up.weight", matrix(shape.n_ff, shape.n_embd))
        writer.add_tensor(f"{blk}.ffn_down.weight", matrix(shape.n_embd, shape.n_ff))
    writer.add_tensor("output_norm.weight", norm())
    writer.add_tensor("output.weight", matrix(N_VOCAB, shape.n_embd))

    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    os.replace(tmp, out)
    return out

"""Model facts from a GGUF file's header and tensor infos, without the tensor data.

A GGUF file starts with a header, key/value metadata and one info record per
tensor (name, shape, type, offset); the weights follow. The facts melt needs
(architecture, parameter count, file type, vocabulary size) are all there.
The vocabulary (262,144 strings for Gemma 3) is skipped by its lengths, never
decoded, so a 4 GB model reads in milliseconds. Facts are remembered by
(path, size, mtime_ns) in ``$MELT_CACHE_DIR/gguf-facts.json``.
"""

from __future__ import annotations

import json
import mmap
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path

from melt.store.atomic import atomic_write_json
from melt.store.paths import cache_dir

MAGIC = b"GGUF"

# GGUF metadata value types -> struct format of a scalar (8 = string, 9 = array).
_SCALAR = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9

#: llama.cpp's ``general.file_type`` (enum llama_ftype) -> name.
FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1",
    10: "Q2_K", 11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M",
    16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S",
    22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M",
    28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0", 37: "TQ2_0",
}

#: ggml tensor types (enum ggml_type) -> name.
TENSOR_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 9: "Q8_1",
    10: "Q2_K", 11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 15: "Q8_K", 16: "IQ2_XXS",
    17: "IQ2_XS", 18: "IQ3_XXS", 19: "IQ1_S", 20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S",
    23: "IQ4_XS", 24: "I8", 25: "I16", 26: "I32", 27: "I64", 28: "F64", 29: "IQ1_M",
    30: "BF16", 34: "TQ1_0", 35: "TQ2_0",
}

# Scalars worth keeping (others are skipped); "{arch}." is the architecture's prefix.
_KEEP = {
    "general.architecture", "general.name", "general.file_type", "general.quantization_version",
    "general.alignment", "general.size_label", "general.basename", "general.finetune",
}
_KEEP_ARCH = {"context_length", "embedding_length", "block_count", "feed_forward_length",
              "attention.head_count", "attention.head_count_kv", "vocab_size"}


class GGUFError(ValueError):
    """The file is not a GGUF file this reader understands (or it is truncated)."""


@dataclass(frozen=True)
class GGUFFacts:
    """What a GGUF file says about the model in it."""

    version: int
    architecture: str | None
    name: str | None
    file_type: str | None  # e.g. "Q4_K_M"; None when the file does not say
    n_params: int
    n_tensors: int
    tensor_types: dict[str, int]  # ggml type -> number of tensors
    vocab_size: int | None
    context_length: int | None
    n_layers: int | None
    embedding_length: int | None
    size_bytes: int
    metadata: dict[str, object] = field(default_factory=dict)  # the kept scalars

    def to_dict(self) -> dict:
        return asdict(self)


class _Cursor:
    __slots__ = ("buf", "pos", "end")

    def __init__(self, buf, end: int):
        self.buf, self.pos, self.end = buf, 0, end

    def take(self, fmt: str):
        size = struct.calcsize(fmt)
        if self.pos + size > self.end:
            raise GGUFError("truncated GGUF header")
        (value,) = struct.unpack_from("<" + fmt, self.buf, self.pos)
        self.pos += size
        return value

    def string(self) -> str:
        n = self.take("Q")
        if self.pos + n > self.end:
            raise GGUFError("truncated GGUF string")
        raw = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        return raw.decode("utf-8", errors="replace")

    def skip_strings(self, count: int) -> None:
        buf, pos, end, unpack = self.buf, self.pos, self.end, struct.Struct("<Q").unpack_from
        for _ in range(count):
            if pos + 8 > end:
                raise GGUFError("truncated GGUF string array")
            pos += 8 + unpack(buf, pos)[0]
        if pos > end:
            raise GGUFError("truncated GGUF string array")
        self.pos = pos

    def value(self, vtype: int, keep: bool):
        if vtype in _SCALAR:
            return self.take(_SCALAR[vtype])
        if vtype == _STRING:
            if keep:
                return self.string()
            self.skip_strings(1)
            return None
        if vtype == _ARRAY:
            etype, count = self.take("I"), self.take("Q")
            if etype == _STRING:
                self.skip_strings(count)
            elif etype in _SCALAR:
                size = struct.calcsize(_SCALAR[etype]) * count
                if self.pos + size > self.end:
                    raise GGUFError("truncated GGUF array")
                self.pos += size
            elif etype == _ARRAY:
                for _ in range(count):
                    self.value(_ARRAY, False)
            else:
                raise GGUFError(f"unknown GGUF array element type {etype}")
            return _ArrayLen(count)
        raise GGUFError(f"unknown GGUF value type {vtype}")


class _ArrayLen(int):
    """The length of an array value (its elements are skipped)."""


def read_gguf_facts(path: str | Path) -> GGUFFacts:
    """Facts of the GGUF file at ``path``, from its header and tensor infos only.

    Raises ``GGUFError`` when the file is not GGUF (v2 or v3) or is truncated,
    ``OSError`` when it cannot be read.
    """
    path = Path(path)
    with open(path, "rb") as fh:
        size = path.stat().st_size
        if size < 24 or fh.read(4) != MAGIC:
            raise GGUFError(f"{path.name} is not a GGUF file")
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            view = memoryview(mm)
            try:
                return _parse(view, size)
            finally:
                view.release()


def _parse(buf: memoryview, size: int) -> GGUFFacts:
    cur = _Cursor(buf, size)
    cur.pos = 4
    version = cur.take("I")
    if version not in (2, 3):
        raise GGUFError(f"GGUF version {version} is not supported (2 and 3 are)")
    n_tensors, n_kv = cur.take("Q"), cur.take("Q")
    kept: dict[str, object] = {}
    arch: str | None = None
    tokens: int | None = None
    for _ in range(n_kv):
        key = cur.string()
        vtype = cur.take("I")
        keep = key in _KEEP or (arch is not None and key.startswith(arch + ".")
                                and key[len(arch) + 1:] in _KEEP_ARCH)
        value = cur.value(vtype, keep)
        if key == "tokenizer.ggml.tokens" and isinstance(value, _ArrayLen):
            tokens = int(value)
        elif keep and value is not None:
            kept[key] = value
            if key == "general.architecture":
                arch = str(value)
    n_params = 0
    types: dict[str, int] = {}
    for _ in range(n_tensors):
        cur.skip_strings(1)
        n_dims = cur.take("I")
        if n_dims > 8:
            raise GGUFError(f"a tensor with {n_dims} dimensions")
        count = 1
        for _ in range(n_dims):
            count *= cur.take("Q")
        ttype = cur.take("I")
        cur.take("Q")  # offset of the data
        n_params += count
        name = TENSOR_TYPES.get(ttype, f"type{ttype}")
        types[name] = types.get(name, 0) + 1
    ftype = kept.get("general.file_type")

    def arch_int(suffix: str) -> int | None:
        v = kept.get(f"{arch}.{suffix}") if arch else None
        return int(v) if isinstance(v, (int, float)) else None

    return GGUFFacts(
        version=version,
        architecture=arch,
        name=kept.get("general.name") if isinstance(kept.get("general.name"), str) else None,
        file_type=FILE_TYPES.get(ftype, f"ftype{ftype}") if isinstance(ftype, int) else None,
        n_params=n_params,
        n_tensors=n_tensors,
        tensor_types=dict(sorted(types.items())),
        vocab_size=tokens if tokens is not None else arch_int("vocab_size"),
        context_length=arch_int("context_length"),
        n_layers=arch_int("block_count"),
        embedding_length=arch_int("embedding_length"),
        size_bytes=size,
        metadata=kept,
    )


def gguf_facts(path: str | Path) -> GGUFFacts | None:
    """Facts of ``path``, remembered by (path, size, mtime_ns); ``None`` if it is not GGUF."""
    path = Path(path).resolve()
    try:
        st = path.stat()
    except OSError:
        return None
    key = f"{path}:{st.st_size}:{st.st_mtime_ns}"
    memo_file = cache_dir() / "gguf-facts.json"
    try:
        memo = json.loads(memo_file.read_text())
        if not isinstance(memo, dict):
            memo = {}
    except (OSError, ValueError):
        memo = {}
    known = memo.get(key)
    if isinstance(known, dict):
        try:
            return GGUFFacts(**known)
        except TypeError:  # an older layout: read again
            pass
    try:
        facts = read_gguf_facts(path)
    except (GGUFError, OSError, ValueError):
        return None
    memo[key] = facts.to_dict()
    if len(memo) > 500:
        memo = dict(list(memo.items())[-250:])
    try:
        atomic_write_json(memo_file, memo)
    except OSError:
        pass
    return facts

"""MELT's prompt sets, shipped with melt (see ``SOURCE.md`` beside this file).

- :func:`conversations`: 50 multi-turn conversations (user turns only; the
  model's answers are generated when a conversation is replayed);
- :func:`sustained_prompts`: the prompts a sustained run cycles through;
- :func:`pick_conversations`: choose by index or by a seeded sample.
"""

from __future__ import annotations

import json
import random
from functools import lru_cache
from pathlib import Path

_HERE = Path(__file__).parent


@lru_cache(maxsize=None)
def conversations() -> tuple[tuple[str, ...], ...]:
    """Every conversation, each a tuple of user turns."""
    data = json.loads((_HERE / "conversations.json").read_text())
    return tuple(tuple(str(turn) for turn in conv) for conv in data)


@lru_cache(maxsize=None)
def sustained_prompts() -> tuple[str, ...]:
    """The prompts of MELT's sustained runs, in order."""
    data = json.loads((_HERE / "input_sustained.json").read_text())
    flat = data[0] if data and isinstance(data[0], list) else data
    return tuple(str(p) for p in flat)


def pick_conversations(*, index: int | None = None, sample: int | None = None, seed: int = 0) -> list[int]:
    """Indices of the conversations to replay: ``[index]``, or ``sample`` of them drawn with ``seed``.

    Raises ``ValueError`` (with the valid range) for an index or a sample size out of range.
    """
    n = len(conversations())
    if (index is None) == (sample is None):
        raise ValueError("give exactly one of `conversation` (an index) or `sample` (how many)")
    if index is not None:
        if not 0 <= index < n:
            raise ValueError(f"conversation index {index} is out of range: there are {n} (0..{n - 1})")
        return [index]
    assert sample is not None
    if not 1 <= sample <= n:
        raise ValueError(f"sample must be 1..{n}, got {sample}")
    return sorted(random.Random(seed).sample(range(n), sample))

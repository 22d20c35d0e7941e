"""The texts shipped for quality jobs: present, English, the file SOURCE.md describes."""

from __future__ import annotations

import hashlib
import re

import pytest

from melt.errors import UnknownNameError
from melt.texts import DEFAULT_TEXT, names, text_path


def test_every_shipped_text_is_the_file_its_source_note_names() -> None:
    assert DEFAULT_TEXT in names()
    note = (text_path(DEFAULT_TEXT).parent / "SOURCE.md").read_text(encoding="utf-8")
    for name in names():
        data = text_path(name).read_bytes()
        text = data.decode("utf-8")
        assert f"## {name}" in note
        assert hashlib.sha256(data).hexdigest() in note, f"{name}: sha256 not recorded in SOURCE.md"
        words = re.findall(r"[A-Za-z]+", text)
        assert len(words) > 5000 and sum(w.lower() in {"the", "and", "of"} for w in words) > len(words) / 20


def test_a_wrong_name_says_which_exist() -> None:
    with pytest.raises(UnknownNameError, match="kjv-genesis"):
        text_path("kjv-genesys")

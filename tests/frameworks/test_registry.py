"""Framework names resolve lazily; unknown ones get a did-you-mean."""

from __future__ import annotations

import pytest

from melt.errors import UnknownNameError
from melt.frameworks import available_frameworks, get_framework
from melt.frameworks.base import Framework
from melt.frameworks.llamacpp import LlamaCpp


def test_llama_cpp_is_built_in():
    fw = get_framework("llama.cpp")
    assert isinstance(fw, LlamaCpp)
    assert isinstance(fw, Framework)
    assert "llama.cpp" in available_frameworks()


def test_unknown_framework_suggests_the_close_name():
    with pytest.raises(UnknownNameError) as err:
        get_framework("llamacpp")
    assert str(err.value).startswith("Unknown framework 'llamacpp'. Did you mean: llama.cpp?")
    assert "Available: " in str(err.value)


def test_unknown_framework_without_close_match_lists_available():
    with pytest.raises(UnknownNameError, match=r"Unknown framework 'tensorrt'\. Available: .*llama\.cpp"):
        get_framework("tensorrt")

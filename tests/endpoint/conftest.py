"""Fixtures of the endpoint tests: a real llama-server (Gemma 3 270M, --api-key) per module."""

from __future__ import annotations

import secrets
from typing import Iterator

import pytest

from tests.conftest_models import gemma_model  # noqa: F401
from tests.endpoint.parts import LlamaServer

KEY_ENV = "MELT_TEST_ENDPOINT_KEY"


@pytest.fixture(scope="session")
def llama_server_binary():
    """llama-server of melt's cached host build (added to the build if it lacks it)."""
    from melt.frameworks.llamacpp.build import host_build

    return host_build(targets=["llama-server"]).binaries["llama-server"]


@pytest.fixture(scope="module")
def api_key() -> str:
    return f"sk-melt-test-{secrets.token_hex(16)}"


@pytest.fixture(scope="module")
def llama_server(llama_server_binary, gemma_model, api_key,  # noqa: F811
                 tmp_path_factory) -> Iterator[LlamaServer]:
    server = LlamaServer(llama_server_binary, gemma_model, api_key,
                         tmp_path_factory.mktemp("llama-server") / "server.log")
    yield server
    server.stop()


@pytest.fixture
def key_in_env(monkeypatch, api_key) -> str:
    monkeypatch.setenv(KEY_ENV, api_key)
    return api_key

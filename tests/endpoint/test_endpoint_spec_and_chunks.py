"""The endpoint's config is checked where it is read, and a stream's chunks are parsed defensively:
garbage gives a ChunkError, never another exception."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from melt.config.loader import validate
from melt.config.specs import DeviceSpec
from melt.errors import ConfigError
from melt.frameworks.llamacpp.chat_chunks import ChunkError, read_chunk, retry_after_s

GOOD = {"name": "ep", "kind": "endpoint", "endpoint": {"base_url": "https://api.example.com/v1/",
                                                       "model": "m", "api_key_env": "MY_KEY"}}


def spec(**endpoint) -> DeviceSpec:
    return validate(DeviceSpec, {**GOOD, "endpoint": {**GOOD["endpoint"], **endpoint}}, "ep.yaml")


def test_defaults_verify_tls_and_do_not_retry():
    ep = spec().endpoint
    assert ep.base_url == "https://api.example.com/v1" and ep.verify_tls is True and ep.retries == 0


@pytest.mark.parametrize("field, value, words", [
    ("base_url", "ftp://host/v1", "http:// or https://"),
    ("base_url", "https://user:pw@host/v1", "without credentials"),
    ("base_url", "https://host/v1?key=abc", "without credentials"),
    ("api_key_env", "sk-abc123", "NAME of an environment variable"),
    ("retries", 50, "must be <= 10"),
])
def test_bad_endpoint_fields_are_refused_with_their_path(field, value, words):
    with pytest.raises(ConfigError) as err:
        spec(**{field: value})
    assert f"endpoint.{field}" in str(err.value) and words in str(err.value)


def test_kind_and_section_go_together():
    with pytest.raises(ConfigError, match="kind endpoint needs"):
        validate(DeviceSpec, {"name": "x", "kind": "endpoint"}, "x.yaml")
    with pytest.raises(ConfigError, match="kind endpoint needs"):
        validate(DeviceSpec, {**GOOD, "kind": "local"}, "x.yaml")


def test_the_device_says_what_it_is_and_never_the_key(monkeypatch):
    from melt.devices.registry import open_device

    monkeypatch.setenv("MY_KEY", "sk-secret-value-42")
    device = open_device(spec())
    props = device.properties()
    assert props["host"] == "api.example.com" and props["scheme"] == "https" and props["model"] == "m"
    assert "sk-secret-value-42" not in json.dumps(props)
    with pytest.raises(Exception, match="remote endpoint"):
        device.transport.shell("ls")


def test_a_chunk_of_llama_server_and_one_of_a_cloud_api():
    c = read_chunk(b'{"choices":[{"delta":{"content":"Hi"},"finish_reason":null,"index":0}]}')
    assert c.content == "Hi" and c.finish_reason is None and c.usage is None
    last = read_chunk(json.dumps({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 3,
                                                           "prompt_tokens_details": {"cached_tokens": 2}},
                                  "timings": {"prompt_ms": 12.5, "predicted_n": 3, "junk": "x"}}))
    assert last.usage == {"prompt_tokens": 5, "completion_tokens": 3, "cached_tokens": 2}
    assert last.timings == {"prompt_ms": 12.5, "predicted_n": 3}


@pytest.mark.parametrize("payload", [b"", b"nope", b"[1]", b'{"error": "x"}', b'{"choices": 3}',
                                     b'{"choices": [{"delta": []}]}', b'{"choices": [{"finish_reason": 1}]}',
                                     b'{"usage": {"completion_tokens": -1}}',
                                     b'{"usage": {"prompt_tokens": 1e99}}',
                                     b"[" * 100000])
def test_what_is_not_a_chunk_is_refused(payload):
    with pytest.raises(ChunkError):
        read_chunk(payload)


@settings(max_examples=300, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(
                        st.sampled_from(["choices", "delta", "content", "finish_reason", "usage", "timings",
                                         "error", "prompt_tokens", "completion_tokens", "x"]), kids, max_size=4),
                    max_leaves=20))
def test_garbage_gives_a_chunk_or_a_chunk_error(value):
    try:
        payload = json.dumps(value)
    except ValueError:
        return
    try:
        c = read_chunk(payload)
    except ChunkError:
        return
    assert isinstance(c.content, str)
    assert c.usage is None or all(isinstance(v, int) and v >= 0 for v in c.usage.values())


def test_retry_after_is_bounded():
    assert retry_after_s("2") == 2.0 and retry_after_s("9999") == 60.0
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT") is None and retry_after_s("-1") is None


def test_health_says_whether_it_answers(monkeypatch):
    from melt.devices.registry import open_device
    from melt.errors import MeltError
    from tests.endpoint.parts import ScriptedServer, free_port

    monkeypatch.setenv("MY_KEY", "sk-secret-value-42")
    server = ScriptedServer(lambda h, n: None)
    try:
        assert open_device(spec(base_url=server.base_url)).health()["answers"] is True
    finally:
        server.close()
    with pytest.raises(MeltError, match="does not answer"):
        open_device(spec(base_url=f"http://127.0.0.1:{free_port()}/v1")).health()

"""The real host build of llama.cpp, and real runs of it on the tiny model."""

from __future__ import annotations

import json
import os
import stat
from datetime import datetime, timezone

import pytest

from melt.errors import JobFailed
from melt.frameworks.llamacpp import LlamaCpp
from melt.frameworks.llamacpp import build as build_module

from .conftest import run_invocation

pytestmark = pytest.mark.slow


def test_host_build_has_binaries_and_provenance(llamacpp_build):
    b = llamacpp_build
    assert set(b.binaries) == {"llama-bench", "llama-completion", "llama-server", "llama-perplexity",
                              "llama-quantize"}
    for path in b.binaries.values():
        assert path.parent == b.bin_dir
        assert path.stat().st_mode & stat.S_IXUSR
    assert b.dir.name.startswith("host-")
    assert b.dir.parent.parts[-2:] == ("builds", "llama.cpp")
    prov = json.loads((b.dir / "build.json").read_text())
    assert prov == b.provenance
    assert prov["profile"] == "host"
    assert prov["cmake_flags"]["GGML_NATIVE"] == "OFF"
    assert prov["cmake_flags"]["BUILD_SHARED_LIBS"] == "OFF"
    assert len(prov["source"]["sha256"]) == 64
    assert prov["llama_cpp_commit"] and prov["build_commit"]
    assert prov["compiler"]["version"]
    # compiling llama.cpp takes minutes: a zero or a negative time is a broken clock
    assert prov["build_seconds"] > 1
    built = datetime.fromisoformat(prov["built_at"])
    assert built.tzinfo is not None and built <= datetime.now(timezone.utc)
    assert [p["status"] for p in prov["source"]["patches"]] == ["applied", "applied"]
    assert (b.dir / "build.log").stat().st_size > 0


def test_second_build_is_a_cache_hit_without_cmake(llamacpp_build, monkeypatch):
    def no_cmake(*args, **kwargs):
        raise AssertionError("cmake ran on a cache hit")

    monkeypatch.setattr(build_module.subprocess, "Popen", no_cmake)
    again = LlamaCpp().build("host")
    assert again.cached
    assert again.dir == llamacpp_build.dir
    assert again.provenance["key"] == llamacpp_build.provenance["key"]


def test_a_folder_without_build_json_is_not_a_finished_build(tmp_path):
    unfinished = tmp_path / "host-abc"
    (unfinished / "bin").mkdir(parents=True)
    (unfinished / "bin" / "llama-bench").write_text("")
    assert build_module._load_finished(unfinished, ["llama-bench"]) is None


def test_a_build_missing_a_wanted_binary_is_not_a_hit(tmp_path):
    """A build without a binary asked for is not taken as finished for that request."""
    import json

    done = tmp_path / "host-abc"
    (done / "bin").mkdir(parents=True)
    (done / "bin" / "llama-bench").write_text("")
    (done / "build.json").write_text(json.dumps({"binaries": {"llama-bench": {"file": "bin/llama-bench"}}}))
    assert build_module._load_finished(done, ["llama-bench"]) is not None
    assert build_module._load_finished(done, ["llama-bench", "llama-server"]) is None
    (done / "bin" / "llama-bench").unlink()  # listed but gone: not a build at all
    assert build_module._load_finished(done, []) is None


def test_patch_is_in_the_built_tree(llamacpp_build):
    from melt.frameworks.llamacpp.source import obtain_source, parse_source
    from melt.frameworks.llamacpp.recipe import load_recipe

    recipe = load_recipe()
    tree = obtain_source(parse_source(None, recipe), recipe)
    text = (tree.path / "tools/completion/completion.cpp").read_text()
    assert "common_log_flush(common_log_main());" in text


def test_bench_on_tiny_model_gives_real_numbers(llamacpp_build, tiny_model):
    fw = LlamaCpp()
    params = {"n_prompt": 32, "n_gen": 8, "threads": 2, "repetitions": 2}
    inv = fw.invocation("bench", params, bin_dir=str(llamacpp_build.bin_dir),
                        model_path=str(tiny_model))
    proc = run_invocation(inv)
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = fw.parse_metrics("bench", params, proc.stdout, proc.stderr, proc.returncode)
    assert m["prefill_tps"] > 0 and m["decode_tps"] > 0


def test_generate_on_tiny_model_gives_real_numbers_every_time(llamacpp_build, tiny_model):
    # Several runs: without the log-flush patch the timing lines go missing now and then.
    fw = LlamaCpp()
    params = {"prompt": "Hello, tiny model.", "n_predict": 16, "threads": 2, "ctx_size": 256}
    for _ in range(5):
        inv = fw.invocation("generate", params, bin_dir=str(llamacpp_build.bin_dir),
                            model_path=str(tiny_model))
        proc = run_invocation(inv)
        m = fw.parse_metrics("generate", params, proc.stdout, proc.stderr, proc.returncode)
        assert m["gen_tokens"] == 15  # n_predict - 1 decode runs: EOS is ignored
        assert m["prompt_tokens"] > 1
        for key in ("prefill_tps", "decode_tps", "ttft_est_ms", "total_ms"):
            assert m[key] > 0, key
        assert m["ttft_est_ms"] > m["prompt_ms"]


def test_real_crash_is_a_failed_job(llamacpp_build, tmp_path):
    fw = LlamaCpp()
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + os.urandom(64))
    inv = fw.invocation("generate", {"n_predict": 4}, bin_dir=str(llamacpp_build.bin_dir),
                        model_path=str(broken))
    proc = run_invocation(inv)
    assert proc.returncode != 0
    with pytest.raises(JobFailed) as err:
        fw.parse_metrics("generate", {}, proc.stdout, proc.stderr, proc.returncode)
    assert f"exited with code {proc.returncode}" in err.value.reason


def test_build_command_prints_the_cached_build(llamacpp_build):
    from click.testing import CliRunner

    from melt.cli.main import cli

    result = CliRunner().invoke(cli, ["build", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["cached"] is True
    assert info["dir"] == str(llamacpp_build.dir)
    assert info["provenance"]["profile"] == "host"

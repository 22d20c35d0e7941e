"""The provenance line of ``melt results show``: what is known, nothing standing in for the rest."""

from __future__ import annotations

from melt import __version__
from melt.cli.results_view import build_text, provenance_line
from melt.store.runs import ResultsStore
from tests.helpers import melt

LLAMA = {"framework": "llama.cpp", "profile": "arm64", "abi": "arm64-v8a",
         "llama_cpp_commit": "0c1e57098bba43ac29e6e3b677cdceebdd22334f"}
STAND_IN = {"framework": "mlc-llm", "profile": "stand-in", "stand_in": True, "llama.cpp": LLAMA}
MODEL = {"name": "gemma", "sha256": "5f2b0e8c1d9a" + "0" * 52}


def job(status: str, provenance: dict, framework: str = "mlc-llm", rep: int = 0) -> dict:
    return {"job_id": f"j{rep}", "cell_id": "c", "status": status,
            "reason": None if status == "ok" else "refusing to run llama-completion: wrong ABI",
            "device": "virtual-phone", "framework": framework, "model": "gemma", "workload": "chat",
            "kind": "generate", "params": {}, "repetition": rep, "simulated": True,
            "metrics": {"decode_tps": 5.0} if status == "ok" else {}, "provenance": provenance}


def shown_line(tmp_path, jobs: list[dict]) -> str:
    """The provenance line ``melt results show`` prints for a run of ``jobs``."""
    run = ResultsStore(tmp_path).create_run({"name": "quickstart-mlc"}, experiment_path=None, host={})
    for j in jobs:
        run.save_job(j)
    run.update(status="complete-with-failures", total_jobs=len(jobs))
    out = melt("results", "show", run.run_id, "--results", str(tmp_path))
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stdout.splitlines() if line.startswith("provenance of")]
    assert len(lines) == 1, out.stdout
    return lines[0]


def test_a_job_that_failed_before_its_build_says_what_it_has(tmp_path):
    # what the runner stores for a job refused before anything ran: the model, nothing else
    line = shown_line(tmp_path, [job("failed", {"model": MODEL}, rep=r) for r in range(3)])
    assert line == (f"provenance of the first job (failed): melt {__version__}, "
                    "mlc-llm: no build recorded, model sha256 5f2b0e8c1d9a…")
    assert "None" not in line and "?" not in line


def test_a_job_with_no_provenance_at_all_names_its_framework_and_the_runs_melt(tmp_path):
    line = shown_line(tmp_path, [job("failed", {}, framework="llama.cpp")])
    assert line == f"provenance of the first job (failed): melt {__version__}, llama.cpp: no build recorded"


def test_a_partial_run_shows_the_first_job_that_ran(tmp_path):
    ran = {"melt_version": "0.9.1", "framework_build": STAND_IN, "model": MODEL,
           "command": "sh /data/local/tmp/melt/bin/x/mlc-run chat"}
    line = shown_line(tmp_path, [job("failed", {"model": MODEL}), job("ok", ran, rep=1)])
    assert line == ("provenance of the first job that ran: melt 0.9.1, mlc-llm stand-in, on llama.cpp "
                    "0c1e57098bba (arm64), model sha256 5f2b0e8c1d9a…, "
                    "command: sh /data/local/tmp/melt/bin/x/mlc-run chat")


def test_build_text_leaves_out_what_a_build_does_not_say():
    assert build_text(LLAMA) == "llama.cpp 0c1e57098bba (arm64)"
    assert build_text({"framework": "llama.cpp", "profile": "prebuilt"}) == "llama.cpp (prebuilt)"
    assert build_text({"framework": "mlc-llm", "stand_in": True}) == "mlc-llm stand-in"
    assert build_text({}, "llama.cpp") == "llama.cpp: no build recorded"
    assert build_text(None) == "framework: no build recorded"
    assert provenance_line([]) is None

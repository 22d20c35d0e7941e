"""The local executor: two phones side by side, never two jobs on one phone at once."""

from __future__ import annotations

import json

import pytest

from tests.helpers import last_line, melt, show

pytestmark = [pytest.mark.adb, pytest.mark.slow]


def test_two_phones_run_in_parallel_one_job_at_a_time_each(tmp_path, adb_server, virtual_phone_factory):
    from melt.frameworks.llamacpp.build import host_build
    from melt.models.tiny import write_tiny_model

    host_build()
    model = write_tiny_model(tmp_path / "tiny.gguf", seed=3)
    refs = []
    for name in ("left", "right [bold]x"):  # a name that would be Rich markup
        phone = virtual_phone_factory()
        adb_server.connect(phone.address)
        path = tmp_path / f"{name.split()[0]}.yaml"
        path.write_text(f"name: '{name}'\nkind: android\nbuild_profile: host\n"
                        f"adb: {{connect: '{phone.address}', server_port: {adb_server.port}}}\n"
                        "virtual: {}\ntelemetry: {idle_s: 0.5}\n")
        refs.append(str(path))
    exp = tmp_path / "e.yaml"
    exp.write_text(f"name: two\ndevices: [{', '.join(refs)}]\nmodels: [{{name: t, path: {model}}}]\n"
                   "workloads: [{name: g, kind: generate, prompt: hi, n_predict: 4, threads: 1}]\n"
                   "repetitions: 3\nwarmup: 1\n")
    results = tmp_path / "r"
    out = melt("run", str(exp), "--results", str(results))
    assert out.returncode == 0, out.stderr
    data = show(last_line(out.stdout), results)
    jobs = data["jobs"]
    assert len(jobs) == 6 and all(j["status"] == "ok" for j in jobs), [j["reason"] for j in jobs]
    spans: dict[str, list] = {}
    for j in jobs:
        spans.setdefault(j["device"], []).append((j["started_at"], j["finished_at"]))
    assert sorted(len(s) for s in spans.values()) == [3, 3]
    for s in spans.values():
        s.sort()
        assert all(a[1] <= b[0] for a, b in zip(s, s[1:])), s  # one job at a time per phone
    left, right = spans.values()
    assert any(a[0] < b[1] and b[0] < a[1] for a in left for b in right)  # side by side
    # one build for both, staged on each phone; the progress shows the name as text
    manifest = json.loads((results / data["run_id"] / "manifest.json").read_text())
    assert manifest["executor"] == "local"
    assert sorted(s["device"] for s in manifest["staging"]) == sorted(["left", "right [bold]x"])
    assert "right [bold]x" in out.stderr

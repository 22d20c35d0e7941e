"""``melt run`` on the virtual iPhone: the runner's iPhone path end to end.

What is real: ``melt run`` in this process, the virtual iPhone in another,
the loopback protocol between them, the app process it launches, the host
build's llama-bench and llama-completion on Gemma 3 270M (the quick start)
or melt's tiny model (the failures), melt's parsers and store. What is
simulated: the phone (its container, lock, tunnel, thermal state and energy
impact are a model), so its results are marked simulated.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from melt.cli.main import cli
from melt.labels import job_labels
from melt.runner.ios_executor import MISSING_ON_IOS
from melt.virtual.iphone import VirtualIphone

REPO = Path(__file__).resolve().parents[2]


def device_config(folder: Path, address: str, **virtual: object) -> Path:
    """The repo's virtual-iphone.yaml pointed at ``address``, with ``virtual`` overrides."""
    doc = yaml.safe_load((REPO / "device_configs" / "virtual-iphone.yaml").read_text())
    doc["ios"]["virtual"] = address
    doc["cooldown"] = {"timeout_s": 60, "poll_s": 0.5}
    for key, value in virtual.items():
        doc["virtual"][key] = value
    path = folder / "device_configs" / "virtual-iphone.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc))
    return path


def start_iphone(tmp_path: Path, **virtual: object) -> VirtualIphone:
    doc = yaml.safe_load((REPO / "device_configs" / "virtual-iphone.yaml").read_text())["virtual"]
    doc.update(virtual, port=0)
    cfg = tmp_path / "iphone.yaml"
    cfg.write_text(yaml.safe_dump({"virtual": doc}))
    phone = VirtualIphone(cfg, port=0, state_dir=tmp_path / "state")
    phone.start()
    device_config(tmp_path, phone.address, **virtual)
    return phone


def tiny_experiment(folder: Path, **bench: object) -> Path:
    doc = {"name": "ios-tiny", "devices": ["virtual-iphone"], "frameworks": [{"name": "llama.cpp"}],
           "models": [{"name": "tiny", "tiny_seed": 0}],
           "workloads": [{"name": "bench", "kind": "bench", "n_prompt": [8], "n_gen": [4], "threads": [1], **bench}],
           "repetitions": 1, "warmup": 0}
    path = folder / "experiments" / "ios-tiny.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc))
    return path


def run(folder: Path, experiment: Path) -> tuple[int, list[dict]]:
    """(0 every job ok, 3 some failed; anything else fails the test), the stored records."""
    result = CliRunner().invoke(cli, ["run", str(experiment), "--results", str(folder / "results")])
    code = 3 if type(result.exception).__name__ == "JobsFailed" else result.exit_code
    assert code in (0, 3), result.output
    records = [json.loads(p.read_text()) for p in sorted((folder / "results").glob("*/jobs/*/result.json"))]
    assert records, result.output
    return code, records


@pytest.fixture
def here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # ./device_configs wins over the repo's
    return tmp_path


@pytest.mark.slow
def test_quickstart_ios_runs_on_the_virtual_iphone(here):
    phone = start_iphone(here)
    try:
        # the quick start as shipped, with one repetition and no warm-up to keep the test short
        doc = yaml.safe_load((REPO / "experiments" / "quickstart-ios.yaml").read_text())
        assert doc["devices"] == ["virtual-iphone"] and {w["kind"] for w in doc["workloads"]} == {"bench", "generate"}
        doc.update(repetitions=1, warmup=0)
        exp = here / "experiments" / "quickstart-ios.yaml"
        exp.parent.mkdir()
        exp.write_text(yaml.safe_dump(doc))
        code, records = run(here, exp)
        assert code == 0, [r["reason"] for r in records]
        assert sorted(r["kind"] for r in records) == ["bench", "generate"]
        for r in records:
            m = r["metrics"]
            assert r["status"] == "ok" and "simulated" in job_labels(r) and r["provenance"]["device"]["simulated"]
            assert m["decode_tps"] > 0 and m["prefill_tps"] > 0
            # the energy figure is iOS's unitless score, never joules; a run that ended before the
            # first sample (a short job on a loaded machine) has none, and says why
            missing = r["metrics_missing"]
            if "energy_impact_mean" in m:
                assert m["energy_impact_mean"] > 0 and m["energy_impact_max"] >= m["energy_impact_mean"]
                assert "not joules" in r["provenance"]["energy_impact"]["note"]
            else:
                assert missing["energy_impact_mean"].startswith("iOS gave no energy-impact sample"), missing
            assert not [k for k in m if k.endswith("_j") or k.startswith("avg_power")], m
            # what a shell device gives and an iPhone cannot, each with why
            for key in ("energy_decode_j", "sample_rate_hz", "temp_max_c", "peak_rss_bytes"):
                assert key in missing and missing[key] == MISSING_ON_IOS[key]
            assert "50 Hz" in missing["sample_rate_hz"]
            assert m["thermal_level_start"] in (0, 1, 2, 3) and r["provenance"]["cooldown"]["ok"]
        assert any("energy_impact_mean" in r["metrics"] for r in records), [r["metrics_missing"] for r in records]
        # the model went into the app's container once, by content
        models = list((phone.container() / "melt" / "models").glob("*.gguf"))
        assert len(models) == 1 and models[0].stat().st_size > 100_000_000
        gen = next(r for r in records if r["kind"] == "generate")
        assert gen["metrics"]["gen_tokens"] == 31  # n_predict 32: llama-completion ran inside the "app"
    finally:
        phone.stop()


@pytest.mark.slow
def test_a_second_run_sends_the_model_no_more(here):
    phone = start_iphone(here)
    try:
        exp = tiny_experiment(here)
        run(here, exp)
        staged = next((phone.container() / "melt" / "models").glob("*.gguf"))
        before = staged.stat().st_mtime_ns
        shutil.rmtree(here / "results")
        code, records = run(here, exp)
        assert code == 0 and records[0]["status"] == "ok"
        assert staged.stat().st_mtime_ns == before  # not pushed again
    finally:
        phone.stop()


@pytest.mark.parametrize("break_it, reason", [
    (lambda phone: phone.uninstall("org.melt.bench"), "app not installed"),
    (lambda phone: phone.lock(True), "device locked"),
    (lambda phone: phone.set_tunnel(False), "tunnel missing"),
])
def test_a_phone_that_cannot_run_fails_its_jobs_with_why(here, break_it, reason):
    phone = start_iphone(here)
    try:
        break_it(phone)
        import time

        time.sleep(0.6)  # the phone takes its controls on its next tick
        code, records = run(here, tiny_experiment(here))
        assert code == 3
        assert [r["status"] for r in records] == ["failed"]
        assert records[0]["reason"].startswith(reason), records[0]["reason"]
        assert "Traceback" not in records[0]["reason"]
    finally:
        phone.stop()


def test_locked_then_unlocked_the_next_run_goes_on(here):
    """A locked phone is not a broken one: unlocked, its jobs run."""
    phone = start_iphone(here)
    try:
        phone.lock(True)
        import time

        time.sleep(0.6)
        _, records = run(here, tiny_experiment(here))
        assert records[0]["reason"].startswith("device locked")
        phone.lock(False)
        time.sleep(0.6)
        shutil.rmtree(here / "results")
        code, records = run(here, tiny_experiment(here))
        assert code == 0 and records[0]["status"] == "ok", records[0]["reason"]
    finally:
        phone.stop()


def test_cooldown_waits_for_the_thermal_state_ios_reports(here):
    phone = start_iphone(here, thermal={"cool_tau_s": 1.5, "heat_per_core_k_s": 0.0,
                                        "fair_k": 4, "serious_k": 9, "critical_k": 15})
    try:
        phone.set_thermal("serious")
        import time

        time.sleep(0.6)
        code, records = run(here, tiny_experiment(here))
        assert code == 0, records[0]["reason"]
        cool = records[0]["provenance"]["cooldown"]
        states = [s for _, s in cool["readings"]]
        assert cool["ok"] and cool["start_state"] in ("serious", "fair") and cool["end_state"] == "nominal"
        assert cool["waited_s"] > 0.5 and states[-1] == "nominal" and "nominal" not in states[:-1]
        assert records[0]["metrics"]["thermal_level_start"] == 0  # the job started cool
    finally:
        phone.stop()


def test_cooldown_that_never_comes_fails_the_job(here):
    phone = start_iphone(here, thermal={"cool_tau_s": 1000, "heat_per_core_k_s": 0.0,
                                        "fair_k": 4, "serious_k": 9, "critical_k": 15})
    try:
        doc = yaml.safe_load((here / "device_configs" / "virtual-iphone.yaml").read_text())
        doc["cooldown"] = {"timeout_s": 1.5, "poll_s": 0.5}
        (here / "device_configs" / "virtual-iphone.yaml").write_text(yaml.safe_dump(doc))
        phone.set_thermal("critical")
        import time

        time.sleep(0.6)
        code, records = run(here, tiny_experiment(here))
        assert code == 3 and records[0]["reason"].startswith("cool-down failed: still critical")
    finally:
        phone.stop()


def test_melt_virtual_start_ios_detaches_lists_and_stops(tmp_path):
    state = tmp_path / "state"
    config = str(REPO / "device_configs" / "virtual-iphone.yaml")
    started = CliRunner().invoke(cli, ["virtual", "start", "ios", "--detach", "--port", "0", "--config", config,
                                       "--state-dir", str(state)])
    assert started.exit_code == 0, started.output
    address = started.output.strip().splitlines()[-1]
    try:
        listed = json.loads(CliRunner().invoke(cli, ["virtual", "list", "--json", "--state-dir", str(state)]).output)
        assert [(p["address"], p["kind"]) for p in listed] == [(address, "ios")]
        from melt.transports.ios_wire import LoopbackIosServices

        info = LoopbackIosServices(address).list_devices()
        assert info[0]["simulated"] is True and info[0]["ios_version"] == "17.5.1"
    finally:
        stopped = CliRunner().invoke(cli, ["virtual", "stop", address, "--state-dir", str(state)])
    assert stopped.exit_code == 0 and f"stopped {address}" in stopped.output
    assert json.loads(CliRunner().invoke(cli, ["virtual", "list", "--json", "--state-dir", str(state)]).output) == []


def test_energy_impact_is_judged_as_a_unitless_lower_is_better_score():
    from melt.analysis.metrics import direction, is_known_metric, label

    assert direction("energy_impact_mean") == direction("energy_impact_max") == -1
    assert direction("energy_impact_samples") == direction("thermal_level_start") == 0
    assert "unitless" in label("energy_impact_mean") and "J" not in label("energy_impact_mean")
    assert is_known_metric("energy_impact_mean")  # melt compare --metric accepts it


def test_melt_farm_up_finds_a_running_virtual_iphone(here):
    """`melt farm up` starts a worker per running virtual device: the iPhone is one of them."""
    from melt.farm.local import virtual_devices

    phone = start_iphone(here)
    try:
        assert virtual_devices(here / "device_configs", here / "state") == ["virtual-iphone"]
    finally:
        phone.stop()
    assert virtual_devices(here / "device_configs", here / "state") == []


def test_a_workload_the_app_cannot_run_fails_with_why(here):
    phone = start_iphone(here)
    try:
        exp = tiny_experiment(here)
        doc = yaml.safe_load(exp.read_text())
        doc["workloads"] = [{"name": "chat", "kind": "serve", "requests": 1}]
        exp.write_text(yaml.safe_dump(doc))
        code, records = run(here, exp)
        assert code == 3 and records[0]["status"] == "failed"
        assert "runs llama-bench and llama-completion only" in records[0]["reason"], records[0]["reason"]
    finally:
        phone.stop()

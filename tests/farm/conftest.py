"""A farm on this machine: a real Redis, real adb, virtual phones, `melt farm worker` processes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

from tests.conftest_virtual import adb_server  # noqa: F401
from tests.helpers import ROOT, need

PASSWORD = "farm-secret-8d1f"
#: The farm key every host of these tests holds (the submitter, the workers, the task run directly).
FARM_KEY = "4f1c9a7e2b6d8035c1e9f7a2b4d6c8e0a3f5b7d9c1e3a5f7b9d1c3e5a7f9b1d3"


@pytest.fixture(scope="session", autouse=True)
def farm_key() -> Iterator[str]:
    """``MELT_FARM_KEY`` for this process and every child it starts (workers, `melt run --farm`)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MELT_FARM_KEY", FARM_KEY)
        mp.delenv("MELT_FARM_KEY_FILE", raising=False)
        yield FARM_KEY


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    from melt.farm.testing import redis_available, redis_server

    need(redis_available(), "redis-server (apt-get install redis-server)")
    with redis_server(password=PASSWORD) as url:
        yield url


def query_form(url: str) -> str:
    """``redis://:PW@HOST:PORT/0`` as ``redis://HOST:PORT/0?password=PW``."""
    return url.replace(f":{PASSWORD}@", "") + f"?password={PASSWORD}"


def phone_config(name: str, address: str, adb_port: int) -> str:
    return (f"name: {name}\nkind: android\nbuild_profile: host\n"
            f"adb: {{connect: '{address}', server_port: {adb_port}, reconnect_timeout_s: 3}}\n"
            "virtual: {}\ntelemetry: {idle_s: 0.2}\n")


@dataclass
class Host:
    """One `melt farm worker` process (a "host") and the devices it serves."""

    devices: list[str]
    proc: subprocess.Popen
    log_dir: Path
    stderr: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@dataclass
class Farm:
    url: str
    configs: Path
    phones: dict[str, object]  # name -> VirtualPhone
    models: Path  # the workers' models folder (--models): path: models are found there by sha256
    hosts: list[Host] = field(default_factory=list)
    adb: object = None

    def start_host(self, devices: list[str], tmp: Path, url: str | None = None) -> Host:
        log_dir = tmp / f"host-{len(self.hosts)}"
        log_dir.mkdir(parents=True)
        stderr = log_dir / "supervisor.log"
        with open(stderr, "wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "melt.cli.main", "farm", "worker", "--broker", url or self.url,
                 "--configs", str(self.configs), *[a for d in devices for a in ("--device", d)],
                 "--interval", "1", "--log-dir", str(log_dir), "--models", str(self.models)],
                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
        host = Host(devices, proc, log_dir, stderr)
        self.hosts.append(host)
        return host

    def wait_online(self, devices: list[str], timeout: float = 90) -> None:
        """Until every device is advertised online and its Celery worker listens on its queue."""
        from melt.farm.app import redis_client
        from melt.farm.registry import farm_status

        client = redis_client(self.url)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            entries = {e.device: e for e in farm_status(client)}
            ready = [d for d in devices if d in entries and entries[d].health == "online"
                     and any(b"ready" in p.read_bytes() for h in self.hosts
                             for p in [h.log_dir / f"{d}.log"] if p.is_file())]
            if len(ready) == len(devices):
                return
            time.sleep(0.2)
        logs = "\n".join(h.stderr.read_text(errors="replace") for h in self.hosts)
        raise AssertionError(f"devices not online within {timeout} s: {devices}\n{logs}")


@pytest.fixture(scope="module")
def farm(redis_url, adb_server, tmp_path_factory) -> Iterator[Farm]:  # noqa: F811
    """Two hosts with two virtual phones each, serving a real Redis broker."""
    from melt.frameworks.llamacpp.build import host_build
    from melt.devices.abi import host_abi
    from melt.virtual.config import VirtualPhoneConfig
    from melt.virtual.testing import virtual_phone

    host_build()
    tmp = tmp_path_factory.mktemp("farm")
    configs = tmp / "device_configs"
    configs.mkdir()
    names = ["phone-a", "phone-b", "phone-c", "phone-d"]
    with contextlib.ExitStack() as stack:
        phones = {}
        for name in names:
            # host-ABI phones run the host build natively (farm correctness, not emulation)
            phone = stack.enter_context(virtual_phone(VirtualPhoneConfig(abi=host_abi()),
                                                      state_dir=tmp / f"state-{name}"))
            adb_server.connect(phone.address)
            (configs / f"{name}.yaml").write_text(phone_config(name, phone.address, adb_server.port))
            phones[name] = phone
        f = Farm(redis_url, configs, phones, tmp / "models", adb=adb_server)
        f.start_host(names[:2], tmp)
        # the second host names the password as a query parameter, the other form Redis URLs take
        f.start_host(names[2:], tmp, url=query_form(redis_url))
        try:
            f.wait_online(names)
            yield f
        finally:
            for host in f.hosts:
                host.stop()

"""Fixtures for SSH tests: a real sshd (the virtual Jetson) and melt's own config folder.

- ``melt_config``: ``MELT_CONFIG_DIR`` pointing at a fresh folder for the session
  (melt's key and known_hosts live there; the user's are never touched).
- ``jetson``: a virtual Jetson for this module (Debian's sshd on a free port).
- ``trusted``: its host key recorded in melt's known_hosts; ``ssh``: an
  :class:`~melt.transports.ssh.SshTransport` to it.
- ``device_config``: a device config file for it (``virtual-jetson.yaml`` with its port).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from melt.transports.hostkeys import melt_known_hosts, trust
from melt.transports.ssh import SshTransport
from melt.virtual.jetson import VirtualJetson
from tests.helpers import ROOT, need


def _sshd_usable() -> bool:
    return os.path.exists("/usr/sbin/sshd") and shutil.which("bwrap") is not None


@pytest.fixture(scope="session")
def melt_config(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("melt-config")
    old = os.environ.get("MELT_CONFIG_DIR")
    os.environ["MELT_CONFIG_DIR"] = str(folder)
    yield folder
    if old is None:
        os.environ.pop("MELT_CONFIG_DIR", None)
    else:
        os.environ["MELT_CONFIG_DIR"] = old


@pytest.fixture(scope="module")
def jetson(melt_config: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VirtualJetson]:
    need(_sshd_usable(), "/usr/sbin/sshd (openssh-server) and a working bubblewrap")
    board = VirtualJetson(ROOT / "device_configs/virtual-jetson.yaml", port=0,
                          state_dir=tmp_path_factory.mktemp("jetson"))
    board.start()
    yield board
    board.stop()


@pytest.fixture
def trusted(jetson: VirtualJetson) -> VirtualJetson:
    trust(jetson.host, jetson.port)
    return jetson


@pytest.fixture
def untrusted(jetson: VirtualJetson) -> VirtualJetson:
    melt_known_hosts().unlink(missing_ok=True)
    return jetson


@pytest.fixture
def ssh(trusted: VirtualJetson) -> Iterator[SshTransport]:
    t = SshTransport(trusted.host, port=trusted.port, reconnect_timeout_s=15)
    yield t
    t.close()


def write_device_config(folder: Path, board: VirtualJetson, **ssh_extra) -> Path:
    """``virtual-jetson.yaml`` pointed at ``board``'s port, as ``folder/device_configs/virtual-jetson.yaml``."""
    doc = yaml.safe_load((ROOT / "device_configs/virtual-jetson.yaml").read_text())
    doc["ssh"]["port"] = board.port
    doc["ssh"].update(ssh_extra)
    doc["virtual"]["port"] = board.port
    path = folder / "device_configs" / "virtual-jetson.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture
def device_config(jetson: VirtualJetson, tmp_path: Path) -> Path:
    return write_device_config(tmp_path, jetson)

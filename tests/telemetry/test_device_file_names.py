"""File names a device lists are confined to the job's folder on this host.

A device without ``tar`` hands its job files back one by one, under the names
its ``ls`` prints. A compromised device lists names that climb out (``..``),
absolute paths, or answers a pull with a symlink; each is refused with its
reason and nothing is written (or read) outside the job's folder.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from melt.config.specs import DeviceSpec, TelemetrySpec
from melt.devices.local import LocalDevice
from melt.errors import UnsafePathError
from melt.store.paths import confined
from melt.telemetry.session import Step, TelemetrySession
from melt.transports.local import LocalTransport


class HostileDevice(LocalTransport):
    """The local machine as a device without tar whose ``ls`` adds ``extra`` names.

    A pull of one of those names is answered with ``payload`` (the device
    decides what it sends); a pull of ``symlink_as`` leaves a symlink to
    ``symlink_to`` instead of a file, as a transport that kept a device's link would.
    """

    def __init__(self, no_tar: Path, extra: list[str], payload: bytes = b"pwned\n",
                 symlink_as: str | None = None, symlink_to: Path | None = None):
        self.no_tar, self.extra, self.payload = no_tar, extra, payload
        self.symlink_as, self.symlink_to = symlink_as, symlink_to

    def shell(self, script, **kw):
        result = super().shell(f"PATH={self.no_tar}:$PATH; export PATH; {script}", **kw)
        if script.startswith("ls "):
            result = type(result)(result.argv, result.returncode,
                                  " ".join(self.extra) + "\n" + result.stdout, result.stderr)
        return result

    def pull(self, remote, local):
        name = remote.split("/jobs/", 1)[1].split("/", 1)[1]
        if name == self.symlink_as and self.symlink_to is not None:
            Path(local).symlink_to(self.symlink_to)
        elif name in self.extra:
            Path(local).parent.mkdir(parents=True, exist_ok=True)
            Path(local).write_bytes(self.payload)
        else:
            super().pull(remote, local)


@pytest.fixture
def host_tmp(tmp_path, monkeypatch) -> Path:
    """The host's temporary folder for job files, inside this test's folder."""
    folder = tmp_path / "host-tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def _session(tmp_path: Path, transport: LocalTransport) -> TelemetrySession:
    spec = DeviceSpec(name="phone", kind="local", workdir=str(tmp_path / "device"),
                      telemetry=TelemetrySpec(idle_s=0))
    return TelemetrySession(LocalDevice(spec, transport))


def _no_tar(tmp_path: Path) -> Path:
    folder = tmp_path / "no-tar"
    folder.mkdir(parents=True)
    (folder / "tar").write_text("#!/bin/sh\nexit 127\n")
    (folder / "tar").chmod(0o755)
    return folder


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file() or p.is_symlink()}


@pytest.mark.parametrize("listed, why", [
    ("../../evil", "climbs out with '..'"),
    ("ABSOLUTE", "is an absolute path"),
    ("sub/../../../evil", "climbs out with '..'"),
    ("nested/file", "names a path, not a file"),
])
def test_a_listed_name_that_leaves_the_job_folder_is_refused(tmp_path, host_tmp, listed, why):
    target = tmp_path / "absolute-target"
    listed = listed.replace("ABSOLUTE", str(target))
    session = _session(tmp_path, HostileDevice(_no_tar(tmp_path), [listed]))
    before = _files(tmp_path)
    with pytest.raises(UnsafePathError, match=why) as caught:
        session.run([Step("run", ("sh", "-c", "echo hello"))])
    assert repr(listed) in str(caught.value) and "\n" not in str(caught.value)
    written = _files(tmp_path) - before
    # the only new files on this host are the device's own (its work dir); none is the payload
    assert all((tmp_path / "device") in p.parents for p in written), written
    assert not target.exists() and not (host_tmp / "evil").exists() and not (tmp_path / "evil").exists()
    assert not [p for p in _files(tmp_path) if p.is_file() and p.read_bytes() == b"pwned\n"]


def test_a_pull_that_leaves_a_symlink_is_neither_read_nor_written_through(tmp_path, host_tmp):
    secret = tmp_path / "secret.txt"
    secret.write_text("host secret\n")
    outside = tmp_path / "outside.txt"
    # first pull of "marks" leaves a link to a host file; the listing names it twice so the
    # second pull would write through that link
    for link_to in (secret, outside):
        device = HostileDevice(_no_tar(tmp_path / link_to.stem), ["marks", "marks"],
                               symlink_as="marks", symlink_to=link_to)
        session = _session(tmp_path / link_to.stem, device)
        with pytest.raises(UnsafePathError, match="symlink"):
            session.run([Step("run", ("sh", "-c", "echo hello"))])
    assert secret.read_text() == "host secret\n" and not outside.exists()


def test_confined_refuses_each_kind_of_escape(tmp_path):
    (tmp_path / "link").symlink_to("/etc")
    assert confined(tmp_path, "samples") == tmp_path / "samples"
    for name, why in [("", "not a file name"), ("..", "not a file name"), ("/etc/x", "absolute"),
                      ("../../evil", "'..'"), ("a\\..\\b", "'..'"), ("a/b", "a path"),
                      ("x\ny", "control character"), ("link", "symlink")]:
        with pytest.raises(UnsafePathError, match=why):
            confined(tmp_path, name)


def test_ordinary_names_still_come_back_file_by_file(tmp_path, host_tmp):
    session = _session(tmp_path, HostileDevice(_no_tar(tmp_path), []))
    out = session.run([Step("run", ("sh", "-c", "echo hello"))])
    assert out.steps[0].stdout == "hello\n" and out.steps[0].returncode == 0

"""The virtual Jetson: Debian's real OpenSSH server in front of a simulated board.

``run_jetson`` (what ``melt virtual start jetson`` and ``python -m
melt.virtual jetson`` run) prepares the board's folder, starts the model
thread and ``/usr/sbin/sshd -D -e -f CONFIG`` as a child process on loopback,
prints the address once sshd accepts connections, and runs until SIGTERM.
The sshd has its own host key (kept across restarts on the same port, so a
trusted board stays trusted), accepts only keys (melt's own key and the
user's ``~/.ssh/*.pub``) and wraps every session in the bubblewrap sandbox of
:mod:`melt.virtual.jetson_sandbox` (``ForceCommand``), SFTP included.

It never trusts itself for the user: ``melt devices trust virtual-jetson``
is an explicit step. Control files in ``/data/melt-virtual/control/`` (see
:class:`VirtualJetson`): ``temperature``, ``throttle`` as on the phone, and
``sshd`` (``restart SECONDS``: kill sshd and every session, as a crash would,
and start it again after SECONDS).
"""

from __future__ import annotations

import getpass
import logging
import os
import pwd
import shlex
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

from melt.errors import MeltError
from melt.virtual.jetson_config import VirtualJetsonConfig, load_jetson_config
from melt.virtual.jetson_sandbox import JetsonSandbox
from melt.virtual.jetson_simulator import JetsonSimulator
from melt.virtual.proctree import become_subreaper, descendants, kill_marked, kill_tree
from melt.virtual.phone import VirtualPhone
from melt.virtual.registry import PhoneRecord, phone_dir, remove_record, write_record
from melt.virtual.sandbox import atomic_write

log = logging.getLogger(__name__)

SSHD = "/usr/sbin/sshd"
SFTP_SERVER = "/usr/lib/openssh/sftp-server"


class VirtualJetsonError(MeltError):
    """The virtual Jetson could not start."""


def ensure_key(path: Path, comment: str) -> Path:
    """An ed25519 key pair at ``path`` (made with ssh-keygen when missing); returns ``path``."""
    if path.is_file() and path.with_name(path.name + ".pub").is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    for p in (tmp, tmp.with_name(tmp.name + ".pub")):
        p.unlink(missing_ok=True)
    done = subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(tmp)],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise VirtualJetsonError(f"ssh-keygen failed: {done.stderr.strip()}")
    os.replace(tmp.with_name(tmp.name + ".pub"), path.with_name(path.name + ".pub"))
    os.replace(tmp, path)
    return path


def authorized_keys() -> str:
    """melt's own public key (made if missing) and the user's ``~/.ssh/*.pub``."""
    from melt.transports.ssh import melt_key_file

    key = ensure_key(melt_key_file(), "melt")
    lines = [key.with_name(key.name + ".pub").read_text().strip()]
    for pub in sorted(Path("~/.ssh").expanduser().glob("*.pub")):
        try:
            lines.append(pub.read_text().strip())
        except OSError:
            continue
    return "\n".join(line for line in lines if line) + "\n"


class JetsonRuntime:
    """The parts of one running virtual Jetson."""

    def __init__(self, config: VirtualJetsonConfig, state_dir: Path, host: str, port: int):
        self.config = config
        self.state_dir = Path(state_dir)
        self.host = host
        self.port = port or _free_port(host)
        self.address = f"{host}:{self.port}"
        self.dir = phone_dir(self.state_dir, self.port)
        self.user = getpass.getuser()
        home = pwd.getpwnam(self.user).pw_dir
        self.sandbox = JetsonSandbox(self.dir / "root", home=home, serial=self.address)
        self.sshd: subprocess.Popen[bytes] | None = None
        self.simulator: JetsonSimulator | None = None
        self._stop = threading.Event()
        self.spawned: set[int] = set()  # children waited for here, not by the orphan reaper

    # ------------------------------------------------------------- set-up
    def prepare(self) -> None:
        if not Path(SSHD).exists():
            raise VirtualJetsonError(f"{SSHD} is missing: install Debian's openssh-server")
        self.dir.mkdir(parents=True, exist_ok=True)
        left = kill_marked(self.sandbox.marker)
        if left:
            log.info("killed %d process(es) left by an earlier run on this port", left)
        self.sandbox.create_jetson(self.config)
        if self.sandbox.probe() != "bwrap":
            raise VirtualJetsonError("bubblewrap (bwrap) does not work here: the virtual Jetson runs "
                                     "its commands only inside its sandbox")
        ensure_key(self.dir / "ssh_host_ed25519_key", f"melt-virtual-jetson-{self.port}")
        atomic_write(self.dir / "authorized_keys", authorized_keys())
        os.chmod(self.dir / "authorized_keys", 0o600)
        wrap = shlex.join(self.sandbox.wrap([], force=True)[:-1]
                          + ["--setenv", "MELT_VIRTUAL_SERIAL", self.address, "--"])
        session = self.dir / "session.sh"
        atomic_write(session, (
            "#!/bin/sh\n"
            "# every session of the virtual Jetson runs inside its bubblewrap sandbox\n"
            'case "${SSH_ORIGINAL_COMMAND:-}" in\n'
            f"  {SFTP_SERVER}*|internal-sftp*) exec {wrap} {SFTP_SERVER} ;;\n"
            f'  "") exec {wrap} /bin/sh -l ;;\n'
            f"  *) exec {wrap} /bin/sh -lc 'cd \"$HOME\" 2>/dev/null; eval \"$SSH_ORIGINAL_COMMAND\"' ;;\n"
            "esac\n"))
        os.chmod(session, 0o755)
        d = self.dir
        atomic_write(d / "sshd_config", "\n".join([
            f"ListenAddress {self.host}:{self.port}",
            f"HostKey {d / 'ssh_host_ed25519_key'}",
            "PidFile none",
            f"AuthorizedKeysFile {d / 'authorized_keys'}",
            "AuthenticationMethods publickey",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password",
            f"AllowUsers {self.user}",
            "StrictModes no",
            "UsePAM no",
            # melt reaches llama-server on the board through a direct-tcpip channel to the
            # board's loopback (SshTransport.forward): that, and nothing else, is forwarded,
            # so a client cannot use the board to reach other hosts
            "AllowTcpForwarding local",
            "PermitOpen 127.0.0.1:* localhost:* [::1]:*",
            "PermitListen none",
            "GatewayPorts no",
            "AllowStreamLocalForwarding no",
            "AllowAgentForwarding no",
            "X11Forwarding no",
            "PermitTunnel no",
            "PrintMotd no",
            "PrintLastLog no",
            "MaxStartups 64",
            "MaxSessions 64",
            "ClientAliveInterval 5",
            # bash (the login shell that runs ForceCommand) skips the host's ~/.bashrc when
            # it is not the first shell level: the board's sessions do not depend on it
            "SetEnv SHLVL=1",
            f"ForceCommand {session}",
            f"Subsystem sftp {SFTP_SERVER}",
            "LogLevel INFO",
            "",
        ]))
        if os.geteuid() == 0:
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege-separation folder

    def start_sshd(self, timeout: float = 15.0) -> None:
        log_file = open(self.dir / "sshd.log", "ab")
        try:
            self.sshd = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.dir / "sshd_config")],
                                         stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file)
        finally:
            log_file.close()
        self.spawned.add(self.sshd.pid)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.sshd.poll() is not None:
                tail = (self.dir / "sshd.log").read_text(errors="replace").strip().splitlines()[-3:]
                raise VirtualJetsonError(f"sshd exited ({self.sshd.returncode}): {' | '.join(tail)}")
            try:
                with socket.create_connection((self.host, self.port), timeout=1) as s:
                    if s.recv(4).startswith(b"SSH-"):
                        return
            except OSError:
                time.sleep(0.05)
        raise VirtualJetsonError(f"sshd did not listen on {self.address} within {timeout:g} s")

    def kill_sshd(self) -> None:
        """Kill sshd and every session it runs (what a crash of the board's sshd looks like)."""
        if self.sshd is None:
            return
        tree = [self.sshd.pid, *descendants(self.sshd.pid)]
        for pid in tree:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.sshd.wait()
        self.sshd = None

    # ------------------------------------------------------------- running
    def run(self, on_ready) -> None:  # noqa: ANN001 (callable(str))
        become_subreaper()
        self.prepare()
        self.simulator = JetsonSimulator(self.config, self.sandbox, self.spawned)
        self.simulator.start()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, lambda *_: self._stop.set())
        record = PhoneRecord(address=self.address, port=self.port, pid=os.getpid(), started_at=time.time(),
                             root=str(self.sandbox.root), truth_log=str(self.simulator.truth_path),
                             isolation=self.sandbox.isolation, kind="jetson")
        try:
            self.start_sshd()
            write_record(record, self.state_dir)
            on_ready(self.address)
            control = self.sandbox.state_path("control", "sshd")
            while not self._stop.wait(0.1):
                text = _take(control)
                if text and text.split()[0] == "restart":
                    down = float(text.split()[1]) if len(text.split()) > 1 else 0.0
                    log.info("control: sshd restart after %.1f s", down)
                    self.kill_sshd()
                    if self._stop.wait(down):
                        break
                    self.start_sshd()
        finally:
            remove_record(self.state_dir, self.port, os.getpid())
            self.kill_sshd()
            self.simulator.stop()
            kill_tree(os.getpid())


def _take(path: Path) -> str | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    path.unlink(missing_ok=True)
    return text


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def run_jetson(config: VirtualJetsonConfig, *, host: str = "127.0.0.1", port: int = 0, state_dir: Path,
               on_ready=lambda address: None) -> None:  # noqa: ANN001
    """Run a virtual Jetson in this process until SIGTERM or SIGINT."""
    runtime = JetsonRuntime(config, state_dir, host, port)
    runtime.dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(runtime.dir / "jetson.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger("melt.virtual").addHandler(handler)
    logging.getLogger("melt.virtual").setLevel(logging.INFO)
    runtime.run(on_ready)


class VirtualJetson(VirtualPhone):
    """A virtual Jetson in a child process (see the module doc)::

        with VirtualJetson(port=0, state_dir=tmp) as board:
            board.address                 # "127.0.0.1:40123": its sshd
            board.restart_sshd(down_s=1)  # sshd and its sessions die, come back after 1 s
            board.read_truth()
    """

    serve_command = "jetson"
    label = "virtual Jetson"

    def __init__(self, config: VirtualJetsonConfig | str | Path | None = None, *, port: int = 0,
                 host: str = "127.0.0.1", state_dir: str | Path | None = None):
        if config is None or isinstance(config, (str, Path)):
            config = load_jetson_config(config)
        super().__init__(config, port=port, host=host, state_dir=state_dir)

    @property
    def dir(self) -> Path:
        """The board's folder (sshd config, host key, logs, ``root/``)."""
        return phone_dir(self.state_dir, self.port)

    def host_path(self, device_path: str) -> Path:
        """Where ``device_path`` of the board lives on the host (``/tmp/x``, ``~/melt`` ...)."""
        home = pwd.getpwnam(getpass.getuser()).pw_dir
        return JetsonSandbox(self.root, home=home).host_path(device_path)

    def restart_sshd(self, down_s: float = 0.0) -> None:
        """Kill sshd and every session now; it listens again after ``down_s`` s."""
        self._control("sshd", f"restart {down_s}")

    def new_host_key(self) -> None:
        """Forget the host key: the next start makes a new one (a reinstalled board)."""
        for name in ("ssh_host_ed25519_key", "ssh_host_ed25519_key.pub"):
            (self.dir / name).unlink(missing_ok=True)

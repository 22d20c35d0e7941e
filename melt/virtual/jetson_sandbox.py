"""The virtual Jetson's file tree: the phone's bubblewrap sandbox with a Jetson layout.

Every SSH session of the virtual Jetson runs inside it (sshd's ``ForceCommand``),
so nothing a "device" command does (``nvpmodel -m``, ``rm -rf`` of its work
dir, a job's files in ``/tmp``) touches the host. Layout of ``root``::

    root/sys      -> /sys   (INA3221 hwmon rails, thermal zones, cpufreq, devicetree model)
    root/tools    -> /usr/local/bin (tegrastats, nvpmodel, jetson_clocks)
    root/home     -> the user's $HOME (with a chatty ~/.profile)
    root/tmp      -> /tmp   (private)
    root/data/melt-virtual -> /data/melt-virtual (model state, truth log, controls)
"""

from __future__ import annotations

import os
from pathlib import Path

from melt.virtual.jetson_config import HWMON_DIR, VirtualJetsonConfig
from melt.virtual.jetson_tools import PROFILE, install_tools
from melt.virtual.sandbox import HOST_ETC, Sandbox, atomic_write


class JetsonSandbox(Sandbox):
    """See the module doc; ``home`` is the login user's home directory."""

    read_only = ("/usr/local/bin",)
    host_etc = HOST_ETC + ("bash.bashrc", "environment", "hostname", "inputrc", "os-release", "profile",
                           "profile.d", "ssl", "timezone")
    # each SSH session is its own bubblewrap, and melt kills a board's process from another
    # session: the host's PID namespace stays (its IPC namespace does not)
    private_pids = False

    def __init__(self, root: Path, *, home: str, serial: str = "", cpu_count: int | None = None):
        super().__init__(root, cpu_count=cpu_count, serial=serial)
        self.home = os.path.normpath(home)
        mounts = [("/data/melt-virtual", "data/melt-virtual"), ("/usr/local/bin", "tools"),
                  ("/sys", "sys"), ("/tmp", "tmp"), (self.home, "home")]
        self.mounts = tuple(sorted(mounts, key=lambda m: -len(m[0])))

    def create_jetson(self, config: VirtualJetsonConfig) -> None:
        """Create (or refresh, after a restart) the layout; the work dir in $HOME is kept."""
        for sub in ("tmp", "home", "data/melt-virtual/state", "data/melt-virtual/control"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        install_tools(self.root / "tools")
        atomic_write(self.root / "home/.profile", PROFILE)
        for ctl in self.state_path("control").iterdir():
            ctl.unlink()
        state = self.state_path("state")
        atomic_write(state / "screen", "off\n")
        atomic_write(state / "hwmon_dir", HWMON_DIR + "\n")
        atomic_write(state / "nvpmodel.conf", "".join(f"{m.id} {m.name}\n" for m in config.power_modes))
        atomic_write(state / "nvpmodel", f"{config.power_mode}\n")  # a restart is a reboot
        atomic_write(state / "jetson_clocks", "0\n")
        sysroot = self.root / "sys"
        dt = sysroot / "firmware/devicetree/base"
        dt.mkdir(parents=True, exist_ok=True)
        atomic_write(dt / "model", config.model_name + "\0")
        atomic_write(dt / "melt,virtual", "1\n")
        hwmon = self.host_path(HWMON_DIR)
        hwmon.mkdir(parents=True, exist_ok=True)
        atomic_write(hwmon / "name", "ina3221\n")
        for rail in config.rails:
            atomic_write(hwmon / f"in{rail.channel}_label", rail.label + "\n")
        atomic_write(hwmon / "in7_label", "sum of shunt voltages\n")
        virt, cls = sysroot / "devices/virtual/thermal", sysroot / "class/thermal"
        virt.mkdir(parents=True, exist_ok=True)
        cls.mkdir(parents=True, exist_ok=True)
        for n, zone in enumerate(config.thermal.zones):
            zdir = virt / f"thermal_zone{n}"
            zdir.mkdir(exist_ok=True)
            atomic_write(zdir / "type", zone.type + "\n")
            link = cls / f"thermal_zone{n}"
            if not link.is_symlink():
                link.symlink_to(f"/sys/devices/virtual/thermal/thermal_zone{n}")
        cpu = sysroot / "devices/system/cpu"
        cpu.mkdir(parents=True, exist_ok=True)
        real = Path("/sys/devices/system/cpu")
        for name in ("online", "possible", "present", "kernel_max"):
            try:
                value = (real / name).read_text()
            except OSError:
                value = f"0-{self.cpu_count - 1}\n"
            atomic_write(cpu / name, value)
        for n in range(self.cpu_count):
            (cpu / f"cpu{n}/cpufreq").mkdir(parents=True, exist_ok=True)
            atomic_write(cpu / f"cpu{n}/online", "1\n")
            gov = cpu / f"cpu{n}/cpufreq/scaling_governor"
            if not gov.exists():
                atomic_write(gov, "schedutil\n")
            atomic_write(cpu / f"cpu{n}/cpufreq/scaling_available_governors", "schedutil performance\n")

    def thermal_zone_dir(self, index: int) -> Path:
        return self.root / f"sys/devices/virtual/thermal/thermal_zone{index}"

    def probe(self) -> str:
        """Check that bubblewrap runs a shell in this layout; sets :attr:`isolation`."""
        import shutil
        import subprocess

        self.isolation = "none"
        if shutil.which("bwrap"):
            try:
                done = subprocess.run(
                    self.wrap(["/bin/sh", "-c", f"test -d {HWMON_DIR} && test -x /usr/local/bin/tegrastats"
                                                f" && test -w {self.home}"], force=True),
                    capture_output=True, timeout=20)
                if done.returncode == 0:
                    self.isolation = "bwrap"
            except (OSError, subprocess.TimeoutExpired):
                pass
        return self.isolation

"""The Jetson programs of the virtual Jetson: ``tegrastats``, ``nvpmodel``, ``jetson_clocks``.

They run inside its sandbox (``/usr/local/bin``) with the host's python3 and
read and write only the sandbox's files: rails under the INA3221 hwmon folder,
thermal zones, cpufreq files, and state files in ``/data/melt-virtual/state``
that the model thread (:mod:`melt.virtual.jetson_simulator`) reads back.
``tegrastats`` prints lines in the format of a real Orin Nano (JetPack 5/6),
with the board's own memory figures (written by the model thread). It prints
no ``EMC_FREQ`` or ``GR3D_FREQ``: the board has no GPU or memory-controller
model to derive them from, and a real tegrastats run without root leaves
them out as well on some releases.
"""

from __future__ import annotations

from pathlib import Path

STATE = "/data/melt-virtual/state"

TEGRASTATS = r'''#!/usr/bin/python3
# tegrastats [--interval MS] [--logfile F]: the virtual Jetson's (simulated) stats, real format
import glob, os, sys, time

def arg(name, default):
    return sys.argv[sys.argv.index(name) + 1] if name in sys.argv[:-1] else default

def read(path, default=""):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return default

if "--help" in sys.argv or "-h" in sys.argv:
    print("Usage: tegrastats [--interval <millisec>] [--logfile <filename>]")
    sys.exit(0)
interval = max(1, int(arg("--interval", "1000"))) / 1000.0
out = open(arg("--logfile", "/dev/stdout"), "a", buffering=1)
hwmon = read("/data/melt-virtual/state/hwmon_dir")
labels = []
for n in range(1, 4):
    label = read(f"{hwmon}/in{n}_label")
    if label:
        labels.append((n, label))
sums, count = {}, 0
last = None

def cpu_times():
    rows = []
    for line in read("/proc/stat").splitlines():
        if line.startswith("cpu") and line[3:4].isdigit():
            v = [int(x) for x in line.split()[1:9]]
            rows.append((v[0] + v[1] + v[2] + v[5] + v[6] + v[7], sum(v)))
    return rows

try:
    last = cpu_times()
    while True:
        time.sleep(interval)
        now = cpu_times()
        cores = []
        for i, ((b1, t1), (b0, t0)) in enumerate(zip(now, last)):
            pct = round(100.0 * (b1 - b0) / (t1 - t0)) if t1 > t0 else 0
            mhz = int(read(f"/sys/devices/system/cpu/cpu{i}/cpufreq/scaling_cur_freq", "0") or 0) // 1000
            cores.append(f"{pct}%@{mhz}")
        last = now
        mem = {}
        for line in read("/data/melt-virtual/state/meminfo").splitlines():  # the board's, not the host's
            k, _, v = line.partition(":")
            mem[k] = int(v.split()[0]) // 1024 if v.split() else 0
        used = mem.get("MemTotal", 0) - mem.get("MemAvailable", 0)
        swap = mem.get("SwapTotal", 0) - mem.get("SwapFree", 0)
        temps = []
        for zone in sorted(glob.glob("/sys/devices/virtual/thermal/thermal_zone*")):
            name = read(zone + "/type").replace("-therm", "").lower()
            t = int(read(zone + "/temp", "-256000") or -256000) / 1000.0
            temps.append(f"{name}@{t:g}C")
        rails = []
        count += 1
        for n, label in labels:
            mv = int(read(f"{hwmon}/in{n}_input", "0") or 0)
            ma = int(read(f"{hwmon}/curr{n}_input", "0") or 0)
            mw = mv * ma // 1000
            sums[label] = sums.get(label, 0) + mw
            rails.append(f"{label} {mw}mW/{sums[label] // count}mW")
        stamp = time.strftime("%m-%d-%Y %H:%M:%S")
        out.write(f"{stamp} RAM {used}/{mem.get('MemTotal', 0)}MB (lfb 8x4MB) "
                  f"SWAP {swap}/{mem.get('SwapTotal', 0)}MB (cached 0MB) CPU [{','.join(cores)}] "
                  f"{' '.join(temps)} {' '.join(rails)}\n")
except (KeyboardInterrupt, BrokenPipeError):
    pass
'''

NVPMODEL = r'''#!/usr/bin/python3
# nvpmodel -q | -m ID | -p --verbose: the virtual Jetson's power modes (simulated)
import os, sys
STATE = "/data/melt-virtual/state"

def read(path, default=""):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return default

modes = {}
for line in read(f"{STATE}/nvpmodel.conf").splitlines():
    mid, _, name = line.partition(" ")
    if mid.isdigit():
        modes[int(mid)] = name.strip()
current = int(read(f"{STATE}/nvpmodel", "0") or 0)
args = sys.argv[1:]
if not args or args[0] in ("-q", "--query"):
    print(f"NV Power Mode: {modes.get(current, 'UNKNOWN')}")
    print(current)
elif args[0] in ("-p", "--print"):
    for mid, name in sorted(modes.items()):
        print(f"POWER_MODEL: ID={mid} NAME={name}")
elif args[0] in ("-m", "--mode") and len(args) > 1:
    if os.geteuid() != 0:
        print("NVPM ERROR: Root privileges are required", file=sys.stderr)
        sys.exit(1)
    if not args[1].isdigit() or int(args[1]) not in modes:
        print(f"NVPM ERROR: Invalid mode: {args[1]}", file=sys.stderr)
        sys.exit(1)
    tmp = f"{STATE}/.nvpmodel.tmp"
    with open(tmp, "w") as f:
        f.write(args[1] + "\n")
    os.replace(tmp, f"{STATE}/nvpmodel")
else:
    print("Usage: nvpmodel [-q] [-m <mode id>] [-p]", file=sys.stderr)
    sys.exit(2)
'''

JETSON_CLOCKS = r'''#!/usr/bin/python3
# jetson_clocks [--show | --restore]: pin the virtual Jetson's clocks (simulated)
import glob, os, sys
STATE = "/data/melt-virtual/state"

def read(path, default=""):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return default

def put(name, value):
    tmp = f"{STATE}/.{name}.tmp"
    with open(tmp, "w") as f:
        f.write(value + "\n")
    os.replace(tmp, f"{STATE}/{name}")

if "--show" in sys.argv:
    cpus = sorted(glob.glob("/sys/devices/system/cpu/cpu[0-9]*"), key=lambda p: int(p.rsplit("cpu", 1)[1]))
    print(f"SOC family:tegra234  Machine:{read('/sys/firmware/devicetree/base/model').strip(chr(0))}")
    print(f"Online CPUs: 0-{len(cpus) - 1}")
    for c in cpus:
        f = c + "/cpufreq/"
        print(f"{os.path.basename(c)}: Online=1 Governor={read(f + 'scaling_governor', 'schedutil')} "
              f"MinFreq={read(f + 'scaling_min_freq')} MaxFreq={read(f + 'scaling_max_freq')} "
              f"CurrentFreq={read(f + 'scaling_cur_freq')} IdleStates: C1=1 c7=1")
    print("GPU MinFreq=306000000 MaxFreq=624750000 CurrentFreq=306000000")
    print("EMC MinFreq=204000000 MaxFreq=2133000000 CurrentFreq=2133000000 FreqOverride=0")
    names = dict(l.partition(" ")[::2] for l in read(f"{STATE}/nvpmodel.conf").splitlines() if l)
    print(f"NV Power Mode: {names.get(read(f'{STATE}/nvpmodel', '0'), 'UNKNOWN').strip()}")
    sys.exit(0)
if os.geteuid() != 0:
    print("Error: jetson_clocks must be run as root", file=sys.stderr)
    sys.exit(1)
put("jetson_clocks", "0" if "--restore" in sys.argv else "1")
'''

PROFILE = r'''# ~/.profile of the virtual Jetson's user: chatty on purpose, like many real
# boards' login scripts; melt must keep this out of command output.
echo "Welcome to melt's virtual Jetson (simulated hardware)"
echo "login script noise on stderr" >&2
'''

TOOLS = {"tegrastats": TEGRASTATS, "nvpmodel": NVPMODEL, "jetson_clocks": JETSON_CLOCKS}


def install_tools(folder: Path) -> None:
    """Write the tools into ``folder`` (mode 755)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in TOOLS.items():
        path = folder / name
        tmp = folder / f".{name}.tmp"
        tmp.write_text(text)
        tmp.chmod(0o755)
        tmp.replace(path)

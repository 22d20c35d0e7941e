"""Phone commands of the virtual phone, as small POSIX shell scripts.

They are installed into the sandbox's ``/system/bin`` and answer in the
formats of a real phone: ``getprop``/``setprop``, ``settings``, ``svc``,
``input keyevent``, ``dumpsys battery|thermalservice|power`` and ``cmd``.
They read the live model state from the sysfs files the model writes and keep
the state later code sets (and must restore) in files under
``/data/melt-virtual``, so it can be checked through ``adb shell``.

They stand in for Android's native binaries, so they use the host's tools
(awk, sort) internally, through a PATH of their own; the device shell's PATH
holds only ``/system/bin`` (mksh as ``sh``, toybox applets, these tools).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from melt.errors import MeltError

STATE = "/data/melt-virtual"

#: first lines of every tool: the host's tools for their own use (see above)
_PRELUDE = 'PATH="${0%/*}:/usr/bin:/bin"; export PATH\n'

GETPROP = r"""#!/bin/sh
# getprop [NAME [DEFAULT]]: system properties of the virtual phone (simulated)
P=/data/melt-virtual/props
case "$1" in -*) shift ;; esac
if [ $# -eq 0 ]; then
  sort "$P" | awk '{ i = index($0, "="); printf "[%s]: [%s]\n", substr($0, 1, i - 1), substr($0, i + 1) }'
  exit 0
fi
awk -v k="$1" -v d="$2" 'index($0, k "=") == 1 { print substr($0, length(k) + 2); f = 1; exit }
  END { if (!f) print d }' "$P"
"""

SETPROP = r"""#!/bin/sh
# setprop NAME VALUE
P=/data/melt-virtual/props
if [ $# -ne 2 ]; then echo "usage: setprop NAME VALUE" >&2; exit 1; fi
case "$1" in
  ro.*) if grep -q "^$1=" "$P"; then
          echo "Failed to set property '$1' to '$2'." >&2; exit 1
        fi ;;
esac
T="$P.$$"
awk -v k="$1" 'index($0, k "=") != 1' "$P" > "$T" && printf '%s=%s\n' "$1" "$2" >> "$T" && mv "$T" "$P"
"""

SETTINGS = r"""#!/bin/sh
# settings [--user N] get|put|delete|list NAMESPACE [KEY [VALUE]]
D=/data/melt-virtual/settings
if [ "$1" = "--user" ]; then shift 2; fi
verb=$1; ns=$2; key=$3
usage() { echo "usage: settings [--user N] get|put|delete|list NAMESPACE [KEY [VALUE]]" >&2; exit 1; }
case "$ns" in system|global|secure) ;; *) usage ;; esac
case "$verb" in
  get) [ -n "$key" ] || usage
       if [ -f "$D/$ns/$key" ]; then cat "$D/$ns/$key"; else echo null; fi ;;
  put) [ -n "$key" ] || usage
       mkdir -p "$D/$ns" && printf '%s\n' "$4" > "$D/$ns/.$key.$$" && mv "$D/$ns/.$key.$$" "$D/$ns/$key" ;;
  delete) [ -n "$key" ] || usage
       if [ -f "$D/$ns/$key" ]; then rm -f "$D/$ns/$key"; echo "Deleted 1 rows"; else echo "Deleted 0 rows"; fi ;;
  list) for f in "$D/$ns"/*; do [ -f "$f" ] && printf '%s=%s\n' "${f##*/}" "$(cat "$f")"; done; true ;;
  *) usage ;;
esac
"""

SVC = r"""#!/bin/sh
# svc power stayon true|false|usb|ac|wireless
if [ "$1" = "power" ] && [ "$2" = "stayon" ]; then
  case "$3" in
    true) v=7 ;; false) v=0 ;; usb) v=2 ;; ac) v=1 ;; wireless) v=4 ;;
    *) echo "usage: svc power stayon [true|false|usb|ac|wireless]" >&2; exit 1 ;;
  esac
  exec settings put global stay_on_while_plugged_in "$v"
fi
echo "svc: not available on this virtual phone: $*" >&2
exit 1
"""

INPUT = r"""#!/bin/sh
# input keyevent [--longpress] KEY...: POWER (26) toggles the screen, SLEEP (223) / WAKEUP (224)
S=/data/melt-virtual/state/screen
[ "$1" = "keyevent" ] || exit 0
shift
[ "$1" = "--longpress" ] && shift
for k in "$@"; do
  cur=$(cat "$S" 2>/dev/null || echo on)
  case "$k" in
    26|KEYCODE_POWER) if [ "$cur" = on ]; then new=off; else new=on; fi ;;
    223|KEYCODE_SLEEP) new=off ;;
    224|KEYCODE_WAKEUP) new=on ;;
    *) continue ;;
  esac
  echo "$new" > "$S.$$" && mv "$S.$$" "$S"
done
"""

DUMPSYS = r"""#!/bin/sh
# dumpsys battery|thermalservice|power (virtual phone: values are simulated)
M=/data/melt-virtual
B=/sys/class/power_supply/battery
O=$M/state/battery
val() { cat "$1" 2>/dev/null || echo "$2"; }
tf() { [ "$1" = 1 ] && echo true || echo false; }
battery() {
  case "$1" in
    unplug) mkdir -p "$O"; echo 0 > "$O/ac"; echo 0 > "$O/usb"; echo 0 > "$O/wireless"; return ;;
    reset) rm -rf "$O"; return ;;
    set) [ -n "$2" ] && [ -n "$3" ] || { echo "usage: dumpsys battery set ac|usb|wireless|status|level|temp|present|invalid VALUE" >&2; exit 1; }
         mkdir -p "$O"; echo "$3" > "$O/$2"; return ;;
  esac
  usb=$(val /sys/class/power_supply/usb/online 0)
  case "$(val $B/status Unknown)" in
    Charging) st=2 ;; Discharging) st=3 ;; "Not charging") st=4 ;; Full) st=5 ;; *) st=1 ;;
  esac
  echo "Current Battery Service state:"
  [ -d "$O" ] && echo "  (UPDATES STOPPED -- use 'reset' to restart)"
  echo "  AC powered: $(tf "$(val $O/ac 0)")"
  echo "  USB powered: $(tf "$(val $O/usb "$usb")")"
  echo "  Wireless powered: $(tf "$(val $O/wireless 0)")"
  echo "  Max charging current: $([ "$usb" = 1 ] && echo 500000 || echo 0)"
  echo "  Max charging voltage: $([ "$usb" = 1 ] && echo 5000000 || echo 0)"
  echo "  Charging counter: $(val $B/charge_counter 0)"
  echo "  status: $(val $O/status $st)"
  echo "  health: 2"
  echo "  present: $(tf "$(val $O/present 1)")"
  echo "  level: $(val $O/level "$(val $B/capacity 0)")"
  echo "  scale: 100"
  echo "  voltage: $(( $(val $B/voltage_now 0) / 1000 ))"
  echo "  temperature: $(val $O/temp "$(val $B/temp 0)")"
  echo "  technology: Li-ion"
}
thermal() {
  echo "IsStatusOverride: false"
  echo "ThermalEventListeners:"
  echo "	callbacks: 0"
  echo "	killed: false"
  echo "	broadcasts count: -1"
  echo "ThermalStatusListeners:"
  echo "	callbacks: 0"
  echo "	killed: false"
  echo "	broadcasts count: -1"
  echo "Thermal Status: $(val $M/state/thermal_status 0)"
  temps=$(for z in /sys/class/thermal/thermal_zone*; do
    t=$(val "$z/type" unknown); v=$(val "$z/temp" 0)
    case "$t" in cpu*|soc*) k=0 ;; gpu*) k=1 ;; battery*) k=2 ;; skin*) k=3 ;; usb*) k=4 ;; *) continue ;; esac
    awk -v v="$v" -v k="$k" -v n="$t" 'BEGIN { printf "\tTemperature{mValue=%.1f, mType=%d, mName=%s, mStatus=0}\n", v / 1000, k, n }'
  done)
  echo "Cached temperatures:"
  echo "$temps"
  echo "HAL Ready: true"
  echo "HAL connection:"
  echo "	ThermalHAL 2.0 connected: yes"
  echo "Current temperatures from HAL:"
  echo "$temps"
  echo "Current cooling devices from HAL:"
  echo "	CoolingDevice{mValue=$(val $M/state/cooling 0), mType=2, mName=cpu}"
}
power() {
  screen=$(val $M/state/screen on)
  usb=$(val /sys/class/power_supply/usb/online 0)
  stay=$(val $M/settings/global/stay_on_while_plugged_in 0)
  [ -d "$O" ] && usb=$(val $O/usb 0)
  if [ "$screen" = on ]; then wake=Awake; disp=ON; else wake=Asleep; disp=OFF; fi
  if [ "$usb" = 1 ] && [ $((stay & 2)) -ne 0 ]; then stayon=true; else stayon=false; fi
  echo "POWER MANAGER (dumpsys power)"
  echo
  echo "Power Manager State:"
  echo "  mDirty=0x0"
  echo "  mWakefulness=$wake"
  echo "  mWakefulnessChanging=false"
  echo "  mIsPowered=$(tf "$usb")"
  echo "  mPlugType=$([ "$usb" = 1 ] && echo 2 || echo 0)"
  echo "  mStayOn=$stayon"
  echo "  mBatteryLevel=$(val $B/capacity 0)"
  echo "  mDisplayReady=true"
  echo
  echo "Settings and Configuration:"
  echo "  mStayOnWhilePluggedInSetting=$stay"
  echo "  mScreenBrightnessSetting=$(val $M/settings/system/screen_brightness 128)"
  echo "  mScreenOffTimeoutSetting=$(val $M/settings/system/screen_off_timeout 60000)"
  echo
  echo "Display Power: state=$disp"
}
case "$1" in
  battery) shift; battery "$@" ;;
  thermalservice) thermal ;;
  power) power ;;
  -l) printf 'Currently running services:\n  battery\n  power\n  thermalservice\n' ;;
  "") battery; thermal; power ;;
  *) echo "Can't find service: $1" ;;
esac
"""

CMD = r"""#!/bin/sh
# cmd SERVICE ...: the few services a virtual phone has
case "$1" in
  battery) shift; exec dumpsys battery "$@" ;;
  thermalservice) echo "$3" > /data/melt-virtual/state/thermal_status_override; exit 0 ;;
  settings) shift; exec settings "$@" ;;
  -l) printf 'battery\nsettings\nthermalservice\n' ;;
  *) echo "cmd: Can't find service: $1" >&2; exit 20 ;;
esac
"""

TOOLS: dict[str, str] = {
    "getprop": GETPROP,
    "setprop": SETPROP,
    "settings": SETTINGS,
    "svc": SVC,
    "input": INPUT,
    "dumpsys": DUMPSYS,
    "cmd": CMD,
}


class UserlandError(MeltError):
    """Android's userland (mksh, toybox) is not installed on this host."""


def toybox_applets(toybox: str) -> list[str]:
    """The applet names a toybox binary offers (``toybox`` with no arguments lists them)."""
    out = subprocess.run([toybox], capture_output=True, text=True, timeout=10).stdout
    return [name for name in out.split() if name.replace("-", "").replace("_", "").isalnum()
            and name not in ("toybox",)]


def install_tools(system_bin: Path) -> None:
    """Write the tools into ``system_bin`` and Android's userland beside them.

    ``sh`` is mksh, ``toybox`` and one link per toybox applet point at the
    host's toybox; the phone's own tools win over applets of the same name.
    Raises :class:`UserlandError` when mksh or toybox is missing.
    """
    mksh, toybox = shutil.which("mksh"), shutil.which("toybox")
    missing = [name for name, path in (("mksh", mksh), ("toybox", toybox)) if not path]
    if missing:
        raise UserlandError(f"the virtual phone needs Android's userland: install {' and '.join(missing)} "
                            f"(Debian packages {' '.join(missing)})")
    assert mksh and toybox
    system_bin.mkdir(parents=True, exist_ok=True)
    for name, text in TOOLS.items():
        path = system_bin / name
        shebang, _, body = text.partition("\n")
        path.write_text(f"{shebang}\n{_PRELUDE}{body}")
        path.chmod(0o755)
    links = {name: toybox for name in toybox_applets(toybox) if name not in TOOLS}
    links.update({"sh": os.path.realpath(mksh), "mksh": os.path.realpath(mksh),
                  "toybox": os.path.realpath(toybox)})
    # Android ships awk beside toybox (one-true-awk); the host's stands in for it
    awk = shutil.which("original-awk") or shutil.which("awk")
    if awk:
        links["awk"] = os.path.realpath(awk)
    for name, target in links.items():
        link = system_bin / name
        if link.is_symlink() and os.readlink(link) == target:
            continue
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target)

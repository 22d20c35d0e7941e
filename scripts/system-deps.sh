#!/bin/sh
# Install the system programs melt's build, demo and tests use, when missing.
# Debian/Ubuntu with apt as root installs them; anywhere else it says what is missing.
set -eu

need=""
command -v cmake >/dev/null 2>&1 || need="$need cmake"
command -v c++ >/dev/null 2>&1 || need="$need g++"
command -v make >/dev/null 2>&1 || need="$need make"
command -v ninja >/dev/null 2>&1 || need="$need ninja-build"
command -v adb >/dev/null 2>&1 || need="$need adb"
command -v bwrap >/dev/null 2>&1 || need="$need bubblewrap"
command -v patch >/dev/null 2>&1 || need="$need patch"
command -v file >/dev/null 2>&1 || need="$need file"
command -v aarch64-linux-gnu-g++ >/dev/null 2>&1 || need="$need g++-aarch64-linux-gnu"
command -v qemu-aarch64-static >/dev/null 2>&1 || need="$need qemu-user-static"
[ -x /usr/sbin/sshd ] || need="$need openssh-server"
command -v redis-server >/dev/null 2>&1 || need="$need redis-server"
command -v mksh >/dev/null 2>&1 || need="$need mksh"
command -v toybox >/dev/null 2>&1 || need="$need toybox"
command -v sqlite3 >/dev/null 2>&1 || need="$need sqlite3"
# MELT_SKIP_BROWSER=1 leaves Chromium out on a developer's machine; never under CI
if [ "${MELT_SKIP_BROWSER:-0}" != 1 ] || [ -n "${CI:-}" ]; then
    command -v chromium >/dev/null 2>&1 || need="$need chromium"
fi

[ -z "$need" ] && exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing:$need" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $need >/dev/null
else
    echo "melt needs these programs, please install them:$need" >&2
    echo "(on Debian/Ubuntu: sudo apt-get install$need)" >&2
    exit 1
fi

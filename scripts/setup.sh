#!/usr/bin/env bash
# One-command set-up for a fresh Debian 12 machine: Debian packages, the kernel
# headers tree BCC needs, and the project venv. Idempotent, and fast when
# everything is already in place (each step checks before it acts).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo/.venv"
packages_file="$repo/scripts/debian-packages.txt"

log() { printf 'setup: %s\n' "$*" >&2; }

wanted_packages() { grep -Ev '^\s*(#|$)' "$packages_file"; }

missing_packages() {
    local pkg
    for pkg in $(wanted_packages); do
        if ! dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null | grep -qx installed; then
            echo "$pkg"
        fi
    done
}

install_packages() {
    local missing
    missing="$(missing_packages | tr '\n' ' ')"
    [ -z "${missing// /}" ] && return 0
    if [ "$(id -u)" != 0 ]; then
        log "missing Debian packages (run as root to install): $missing"
        exit 1
    fi
    log "installing Debian packages: $missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    # shellcheck disable=SC2086  # word splitting of the package list is intended
    apt-get install -y -q --no-install-recommends $missing
}

# BCC compiles TC programs against /lib/modules/$(uname -r)/build. When the running
# kernel has no headers package, point that at the distribution's headers tree: the
# programs use only UAPI structs, which are stable across kernel versions.
link_kernel_headers() {
    local moddir
    moddir="/lib/modules/$(uname -r)"
    [ -e "$moddir/build/include" ] && return 0
    [ "$(id -u)" = 0 ] || { log "no kernel headers at $moddir/build (needs root)"; return 0; }
    local arch_dir common_dir
    arch_dir="$(find /usr/src -maxdepth 1 -name 'linux-headers-*-amd64' | sort -V | tail -n1)"
    common_dir="$(find /usr/src -maxdepth 1 -name 'linux-headers-*-common' | sort -V | tail -n1)"
    if [ -z "$arch_dir" ] || [ -z "$common_dir" ]; then
        log "no linux-headers tree under /usr/src; the eBPF backend will not compile"
        return 0
    fi
    log "linking $moddir/build -> $arch_dir (distribution headers; UAPI-only programs)"
    mkdir -p "$moddir"
    ln -sfn "$arch_dir" "$moddir/build"
    ln -sfn "$common_dir" "$moddir/source"
}

# The venv uses Debian's interpreter with system site-packages: BCC's and
# python-systemd's Python modules come from Debian, not PyPI.
make_venv() {
    local stamp="$venv/.picket-installed" want
    want="$(sha256sum "$repo/pyproject.toml" | cut -d' ' -f1)"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$venv/bin/picket" ]; then
        return 0
    fi
    if [ ! -x "$venv/bin/python" ]; then
        log "creating $venv"
        /usr/bin/python3 -m venv --system-site-packages "$venv"
    fi
    log "installing picket (editable) with test extras"
    # (the grep drops pip notes about package-index paths absent on this machine)
    "$venv/bin/python" -m pip install -q -e "${repo}[test]" 2> >(grep -v "is ignored: it is neither" >&2)
    echo "$want" >"$stamp"
}

install_packages
link_kernel_headers
make_venv
log "ready"

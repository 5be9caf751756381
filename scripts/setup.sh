#!/usr/bin/env bash
# One-command set-up for a fresh Debian 12 machine: Debian packages, the kernel
# headers tree BCC needs, and the project venv. Idempotent, and fast when
# everything is already in place (each step checks before it acts).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo/.venv"

log() { printf 'setup: %s\n' "$*" >&2; }

# Every section of the one list (the agent's image installs only its [agent] section).
wanted_packages() { bash "$repo/scripts/debian-packages.sh"; }

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
    log "installing picket (editable) with the test and lab extras"
    # (the grep drops pip notes about package-index paths absent on this machine)
    "$venv/bin/python" -m pip install -q -e "${repo}[test,lab]" 2> >(grep -v "is ignored: it is neither" >&2)
    echo "$want" >"$stamp"
}

install_packages
# BCC's kernel headers tree; the agent's image runs the same script at start.
bash "$repo/scripts/kernel-headers.sh"
make_venv
log "ready"

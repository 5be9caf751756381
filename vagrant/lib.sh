# Shared by the Vagrant lab's scripts (sourced, not run): logging, the node list the
# Vagrantfile passes, and small waits. The scripts run as root on a node, from the
# checkout rsynced to /vagrant.
# shellcheck shell=bash disable=SC2034  # the variables are for the scripts that source this

CHECKOUT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
K3S_CONTAINERD_CONFIG=/var/lib/rancher/k3s/agent/etc/containerd/config.toml
K3S_IMAGES=/var/lib/rancher/k3s/agent/images  # tarballs k3s imports when it starts

log() { printf 'picket-lab %s: %s\n' "${PICKET_NODE:-host}" "$*" >&2; }
die() { log "$*"; exit 1; }

# All nodes, one "name address pod-cidr" line each, from PICKET_NODES (set by the
# Vagrantfile, the one place they are defined).
nodes_table() {
    local word
    for word in ${PICKET_NODES:?PICKET_NODES is set by the Vagrantfile}; do
        printf '%s\n' "${word//,/ }"
    done
}

# One field (address or pod-cidr) of node NAME.
node_field() {
    local name="$1" field="$2" n ip cidr
    while read -r n ip cidr; do
        if [ "$n" = "$name" ]; then
            case "$field" in
                address) printf '%s\n' "$ip" ;;
                pod-cidr) printf '%s\n' "$cidr" ;;
                *) die "node_field: no field $field" ;;
            esac
            return 0
        fi
    done < <(nodes_table)
    die "no node $name in PICKET_NODES"
}

# The agent's image reference, read from the DaemonSet (the one place it is written).
image_ref() {
    awk '$1 == "image:" { print $2; exit }' "$CHECKOUT/daemonset/base/30-daemonset.yaml"
}

APT_UPDATED=""
apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    if [ -z "$APT_UPDATED" ]; then
        apt-get update -q
        APT_UPDATED=yes
    fi
    apt-get install -y -q --no-install-recommends "$@"
}

# Run a command until it succeeds, for at most LIMIT seconds: wait_for LIMIT WHAT CMD...
wait_for() {
    local limit="$1" what="$2" deadline
    shift 2
    deadline=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || die "gave up after ${limit}s waiting for $what"
        sleep 2
    done
}

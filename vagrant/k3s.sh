#!/usr/bin/env bash
# Vagrant provisioning, every node, once: k3s (server on the control plane, agent on
# the workers) with its flannel and its network policy controller off, and the toy CNI
# in the directories k3s's containerd reads.
#
#   k3s.sh                         # on a node (the Vagrantfile runs it)
#   k3s.sh --conflist-only DIR     # only write this node's conflist into DIR (tests)
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CONFLIST_NAME=10-picket.conflist
PLUGINS=(ptp host-local loopback)
DEBIAN_CNI_BIN=/usr/lib/cni  # Debian's containernetworking-plugins
# Where containerd looks when k3s's config names no CNI directories (k3s releases with
# flannel off have written none), and k3s's own conf dir, which it names in others.
DEFAULT_CONF_DIRS=(/etc/cni/net.d /var/lib/rancher/k3s/agent/etc/cni/net.d)
DEFAULT_BIN_DIRS=(/opt/cni/bin)

# The conflist comes from the generator the netns lab uses (lab/cni.py), for this
# node's pod range; it needs only python3's standard library.
write_conflist() {
    local dir="$1" cidr
    cidr="$(node_field "$PICKET_NODE" pod-cidr)"
    mkdir -p "$dir"
    (cd "$CHECKOUT" && python3 -m lab.cni --pod-cidr "$cidr") >"$dir/.$CONFLIST_NAME"
    mv -f "$dir/.$CONFLIST_NAME" "$dir/$CONFLIST_NAME"  # containerd never reads half a file
}

# Debian's plugins where containerd looks for them; k3s's own copies of host-local and
# loopback (same upstream code) are left in place where they exist.
link_plugins() {
    local dir="$1" plugin
    mkdir -p "$dir"
    for plugin in "${PLUGINS[@]}"; do
        [ -e "$dir/$plugin" ] || ln -s "$DEBIAN_CNI_BIN/$plugin" "$dir/$plugin"
    done
}

# The CNI directories in k3s's generated containerd config: `conf_dir = "..."` and
# `bin_dir = "..."` or `bin_dirs = ["..."]`, whichever this k3s release writes.
containerd_cni_dirs() {
    local key="$1"
    [ -f "$K3S_CONTAINERD_CONFIG" ] || return 0
    grep -E "^[[:space:]]*${key}[[:space:]]*=" "$K3S_CONTAINERD_CONFIG" \
        | grep -oE "[\"'][^\"']+[\"']" | tr -d "\"'" || true
}

install_cni() {
    local dir conf_dirs bin_dirs
    mapfile -t conf_dirs < <(printf '%s\n' "${DEFAULT_CONF_DIRS[@]}"; containerd_cni_dirs conf_dir)
    mapfile -t bin_dirs < <(printf '%s\n' "${DEFAULT_BIN_DIRS[@]}"; containerd_cni_dirs 'bin_dirs?')
    for dir in "${conf_dirs[@]}"; do write_conflist "$dir"; done
    for dir in "${bin_dirs[@]}"; do link_plugins "$dir"; done
    log "CNI: ${CONFLIST_NAME} in ${conf_dirs[*]}; plugins in ${bin_dirs[*]}"
}

install_k3s() {
    local address exec_args service url=""
    address="$(node_field "$PICKET_NODE" address)"
    if [ "$address" = "$PICKET_SERVER" ]; then
        service=k3s
        # Picket enforces policies, the toy CNI wires pods: k3s's flannel and its
        # network policy controller stay off. Node pod ranges come from the
        # Vagrantfile, so the controller manager must not hand out others.
        exec_args="server --node-ip=$address --advertise-address=$address --tls-san=$address"
        exec_args+=" --flannel-backend=none --disable-network-policy"
        exec_args+=" --cluster-cidr=$PICKET_CLUSTER_CIDR"
        exec_args+=" --kube-controller-manager-arg=allocate-node-cidrs=false"
        exec_args+=" --disable=traefik --disable=servicelb --write-kubeconfig-mode=0644"
    else
        service=k3s-agent
        url="https://$PICKET_SERVER:6443"
        exec_args="agent --node-ip=$address"
    fi
    if systemctl is-active --quiet "$service" \
        && k3s --version | grep -qF "${PICKET_K3S_VERSION}"; then
        return 0
    fi
    log "installing k3s $PICKET_K3S_VERSION ($service)"
    curl -sfL https://get.k3s.io -o /tmp/k3s-install.sh
    local settings=(INSTALL_K3S_VERSION="$PICKET_K3S_VERSION" K3S_TOKEN="$PICKET_K3S_TOKEN"
        INSTALL_K3S_EXEC="$exec_args")
    if [ -n "$url" ]; then
        settings+=(K3S_URL="$url")
    fi
    env "${settings[@]}" sh /tmp/k3s-install.sh
}

main() {
    if [ "${1:-}" = --conflist-only ]; then
        write_conflist "${2:?--conflist-only needs a directory}"
        return 0
    fi
    # Before k3s starts, so its first pods find a network; after, into whatever
    # directories its containerd config names (containerd picks up a new conflist
    # without a restart).
    install_cni
    install_k3s
    wait_for 300 "k3s's containerd config" test -f "$K3S_CONTAINERD_CONFIG"
    install_cni
    if [ "$(node_field "$PICKET_NODE" address)" = "$PICKET_SERVER" ]; then
        # Each Node gets its range as it joins (vagrant/pod_cidrs.sh): in the background,
        # for workers join after the control plane is provisioned.
        systemctl stop picket-pod-cidrs 2>/dev/null || true
        systemd-run --unit picket-pod-cidrs --setenv PICKET_NODES="$PICKET_NODES" \
            bash "$CHECKOUT/vagrant/pod_cidrs.sh"
    fi
}

main "$@"

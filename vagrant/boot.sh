#!/usr/bin/env bash
# Vagrant provisioning, every node, at every boot: what does not survive a reboot. The
# toy CNI routes pods, not nodes: each node forwards, and reaches the other nodes' pods
# through static routes via their private addresses (no overlay, no address rewriting,
# so policies see real pod addresses). The BPF filesystem for the agent's pinned maps.
# Vagrant runs it at every `vagrant up`/`reload`; a systemd unit it installs runs it
# at boots Vagrant does not drive, before k3s starts.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

enable_forwarding() {
    printf 'net.ipv4.ip_forward = 1\n' >/etc/sysctl.d/90-picket-lab.conf
    sysctl -q -w net.ipv4.ip_forward=1
}

route_other_nodes_pods() {
    local name address cidr
    while read -r name address cidr; do
        [ "$name" = "$PICKET_NODE" ] && continue
        ip route replace "$cidr" via "$address"
        log "pods of $name ($cidr) via $address"
    done < <(nodes_table)
}

# Pods reaching beyond the lab (images, DNS upstream) leave through the VM's NAT
# interface with the node's address; traffic inside the lab keeps its pod addresses.
masquerade_to_outside() {
    local rule=(-s "$PICKET_CLUSTER_CIDR" ! -d "$PICKET_CLUSTER_CIDR"
        ! -d "${PICKET_SERVER%.*}.0/24" -m comment --comment "picket-lab: pods to outside"
        -j MASQUERADE)
    iptables -w -t nat -C POSTROUTING "${rule[@]}" 2>/dev/null \
        || iptables -w -t nat -A POSTROUTING "${rule[@]}"
}

# systemd mounts it at boot; a node where nothing did gets it here, since the agent
# (without CAP_SYS_ADMIN) cannot mount it itself.
ensure_bpffs() {
    if ! mountpoint -q /sys/fs/bpf; then
        mount -t bpf bpf /sys/fs/bpf
        log "mounted the BPF filesystem at /sys/fs/bpf"
    fi
}

install_boot_unit() {
    local name
    for name in PICKET_NODE PICKET_NODES PICKET_SERVER PICKET_CLUSTER_CIDR; do
        printf '%s="%s"\n' "$name" "${!name}"
    done >/etc/default/picket-lab
    cat >/etc/systemd/system/picket-lab-boot.service <<UNIT
[Unit]
Description=Picket Vagrant lab: forwarding, routes to the other nodes' pods, BPF filesystem
Wants=network-online.target
After=network-online.target
Before=k3s.service k3s-agent.service

[Service]
Type=oneshot
EnvironmentFile=/etc/default/picket-lab
ExecStart=/bin/bash $CHECKOUT/vagrant/boot.sh

[Install]
WantedBy=multi-user.target
UNIT
    systemctl daemon-reload
    systemctl enable --quiet picket-lab-boot.service
}

enable_forwarding
route_other_nodes_pods
masquerade_to_outside
ensure_bpffs
if [ -z "${INVOCATION_ID:-}" ]; then  # run by Vagrant, not by the unit (systemd sets it)
    install_boot_unit
fi

#!/usr/bin/env bash
# Vagrant lab, control plane: gives each node's Node object the pod range the Vagrantfile
# gave it (spec.podCIDR, which the toy CNI's host-local range on that node already is).
# The controller manager hands out none here (k3s.sh: allocate-node-cidrs=false, so that
# it cannot pick others), and Picket reads a node's pod CIDRs from its Node to keep a new
# pod closed until its policy is programmed (docs/agent.md, "Pods closed until
# programmed"). Runs as a transient unit k3s.sh starts (workers join after the control
# plane's provisioning) and exits once every node has its range.
#
#   pod_cidrs.sh    # PICKET_NODES as the Vagrantfile sets it
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

export KUBECONFIG=/etc/rancher/k3s/k3s.yaml
DEADLINE_SECONDS=3600  # bounded: a node that never joins does not keep this running

# 0 when node NAME has a pod CIDR now (set here, or already), 1 when it has not joined.
assign() {
    local name="$1" cidr="$2" current
    current="$(kubectl get node "$name" -o jsonpath='{.spec.podCIDR}' 2>/dev/null)" || return 1
    if [ -z "$current" ]; then
        kubectl patch node "$name" --type merge \
            -p "{\"spec\":{\"podCIDR\":\"$cidr\",\"podCIDRs\":[\"$cidr\"]}}" >/dev/null
        log "node $name: spec.podCIDR $cidr"
    elif [ "$current" != "$cidr" ]; then
        log "node $name already has pod CIDR $current, not $cidr: its CNI range differs"
    fi
}

main() {
    local started=$SECONDS name cidr pending
    while [ $((SECONDS - started)) -lt "$DEADLINE_SECONDS" ]; do
        pending=0
        while read -r name _ cidr; do
            assign "$name" "$cidr" || pending=$((pending + 1))
        done < <(nodes_table)
        [ "$pending" -eq 0 ] && return 0
        sleep 5
    done
    die "nodes still without a pod CIDR after ${DEADLINE_SECONDS}s"
}

main "$@"

#!/usr/bin/env bash
# Vagrant provisioning, control plane, once (again with `vagrant provision cp`): Picket's
# DaemonSet with the backend the Vagrantfile chose, and Prometheus scraping every agent.
#
#   deploy.sh                        # on the control plane (the Vagrantfile runs it)
#   deploy.sh --manifests-only DIR   # only write the manifests it applies into DIR (tests)
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

export KUBECONFIG=/etc/rancher/k3s/k3s.yaml

# The overlay of the backend the Vagrantfile chose (daemonset/iptables/ or
# daemonset/ebpf/), rendered as kubectl renders it.
render_manifests() {
    local dir="$1"
    case "$PICKET_BACKEND" in
        iptables | ebpf) ;;
        *) die "PICKET_BACKEND must be iptables or ebpf, not $PICKET_BACKEND" ;;
    esac
    mkdir -p "$dir"
    kubectl kustomize "$CHECKOUT/daemonset/$PICKET_BACKEND" >"$dir/picket.yaml"
}

# The backend the running DaemonSet was deployed with ("" before the first deploy).
deployed_backend() {
    kubectl -n picket-system get daemonset picket-agent \
        -o jsonpath='{.spec.template.spec.containers[0].args[2]}' 2>/dev/null || true
}

# daemonset/uninstall/ on every node that has joined, until each removed everything
# of both backends; then the uninstall goes too.
uninstall() {
    kubectl kustomize "$CHECKOUT/daemonset/uninstall" | kubectl apply -f -
    kubectl -n picket-system rollout status daemonset/picket-uninstall --timeout=10m
    kubectl -n picket-system delete daemonset picket-uninstall --wait=true
}

deploy_picket() {
    local manifests before
    manifests="$(mktemp -d)"
    render_manifests "$manifests"
    before="$(deployed_backend)"
    if [ "$before" = ebpf ] && [ "$PICKET_BACKEND" = iptables ]; then
        # The iptables DaemonSet may not touch the BPF filesystem, so it cannot remove
        # what the eBPF agents pinned: the uninstall does, between the two.
        log "backend ebpf -> iptables: removing the eBPF backend from every node first"
        kubectl -n picket-system delete daemonset picket-agent --wait=true
        uninstall
    fi
    # A new backend's pods replace the old ones (the eBPF pods' init container removes
    # what the iptables backend programmed).
    kubectl apply -f "$manifests"
    rm -rf "$manifests"
    # Only the nodes that have joined so far; later ones run the agent as they join.
    kubectl -n picket-system rollout status daemonset/picket-agent --timeout=10m
}

main() {
    if [ "${1:-}" = --manifests-only ]; then
        render_manifests "${2:?--manifests-only needs a directory}"
        return 0
    fi
    wait_for 300 "the API server" kubectl get --raw /readyz
    wait_for 300 "node $PICKET_NODE to be Ready" \
        kubectl wait --for=condition=Ready "node/$PICKET_NODE" --timeout=5s
    deploy_picket
    apt_install prometheus
    bash "$CHECKOUT/vagrant/prometheus.sh"
}

main "$@"

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

# daemonset/ as it is, but for the one value that picks the backend.
render_manifests() {
    local dir="$1"
    case "$PICKET_BACKEND" in
        iptables | ebpf) ;;
        *) die "PICKET_BACKEND must be iptables or ebpf, not $PICKET_BACKEND" ;;
    esac
    mkdir -p "$dir"
    cp "$CHECKOUT"/daemonset/*.yaml "$dir/"
    sed -i "s/^  backend: .*/  backend: $PICKET_BACKEND/" "$dir/20-config.yaml"
    grep -qx "  backend: $PICKET_BACKEND" "$dir/20-config.yaml" \
        || die "could not set the backend in daemonset/20-config.yaml"
}

deploy_picket() {
    local manifests before
    manifests="$(mktemp -d)"
    render_manifests "$manifests"
    before="$(kubectl -n picket-system get configmap picket-config \
        -o jsonpath='{.data.backend}' 2>/dev/null || true)"
    kubectl apply -f "$manifests"
    rm -rf "$manifests"
    if [ -n "$before" ] && [ "$before" != "$PICKET_BACKEND" ]; then
        # A ConfigMap change does not restart pods; the new ones clean up the old backend.
        log "backend $before -> $PICKET_BACKEND: restarting the agents"
        kubectl -n picket-system rollout restart daemonset/picket-agent
    fi
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

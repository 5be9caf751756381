#!/usr/bin/env bash
# Check the Vagrant lab from the host, after `vagrant up`:
#
#   vagrant/check.sh [EXAMPLE...]   # default: every folder under examples/
#
# 1. the agents: one ready pod per node;
# 2. the examples: each deployed (nothing outside its own namespaces: example 05's DNS
#    stand-in is never applied), its connectivity matrices probed with `kubectl exec`
#    (agnhost connect) and compared with Picket's oracle on the live objects, then its
#    checks through Services probed at their ClusterIPs through k3s's kube-proxy (dig
#    for a port 53: example 05 resolves through k3s's own kube-dns) and compared with
#    expected.txt (vagrant/examples.py);
# 3. the drops: the denied probes as worker-1's journald holds them (journalctl -t picket);
# 4. the metrics: Prometheus on the control plane scraping every agent.
# Steps 1, 2 and 4 run on the control plane, step 3 on worker-1, each through
# `vagrant ssh NODE -c "sudo bash /vagrant/vagrant/check.sh --on-node STEP"`. Exit status 1 if a
# matrix disagrees with the oracle, a check with expected.txt, an agent is not ready or a
# target is down.
set -euo pipefail

# Every agent's `up` in Prometheus, one line per node; fails unless all are 1.
prometheus_up() {
    python3 - "$1" "${2:-}" <<'PY'
import json
import sys

result = json.loads(sys.argv[1])["data"]["result"]
if sys.argv[2] != "quiet":
    for r in result:
        print(r["metric"].get("node", "?").ljust(12), r["metric"]["instance"].ljust(22),
              "up=" + r["value"][1])
sys.exit(0 if result and all(r["value"][1] == "1" for r in result) else 1)
PY
}

# On a node: one step, as root.
on_node() {
    local step="$1"
    shift
    export KUBECONFIG=/etc/rancher/k3s/k3s.yaml
    case "$step" in
        agents)
            kubectl -n picket-system rollout status daemonset/picket-agent --timeout=5m
            kubectl -n picket-system get pods -o wide
            ;;
        examples)
            local workers
            workers="$(kubectl get nodes -l '!node-role.kubernetes.io/control-plane' -o name \
                | sed 's|^node/||' | sort -V | paste -sd, -)"
            cd /vagrant
            python3 vagrant/examples.py --workers "$workers" "$@"
            ;;
        drops)
            echo "-- journalctl -t picket on $(hostname): the last 20 drop records"
            journalctl -t picket --no-pager -n 20 -o short-iso
            ;;
        prometheus)
            local query='up{job="picket"}' deadline=$((SECONDS + 60)) out
            # A new target is scraped within one interval (15 s): wait for every agent.
            while :; do
                out="$(curl -sfG http://localhost:9090/api/v1/query --data-urlencode "query=$query")" \
                    || out='{"data": {"result": []}}'  # Prometheus still starting
                if prometheus_up "$out" quiet || [ "$SECONDS" -ge "$deadline" ]; then
                    break
                fi
                sleep 5
            done
            echo "-- Prometheus on $(hostname):9090: $query"
            prometheus_up "$out"
            ;;
        *)
            echo "check.sh: unknown step $step" >&2
            exit 2
            ;;
    esac
}

# On the host: every step, on the node it belongs to.
from_host() {
    local examples=("$@") repo status=0
    repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    cd "$repo"
    if [ "${#examples[@]}" = 0 ]; then
        mapfile -t examples < <(find examples -mindepth 1 -maxdepth 1 -type d | sort)
    fi
    remote() { vagrant ssh "$1" -c "sudo bash /vagrant/vagrant/check.sh --on-node ${*:2}"; }
    echo "==== agents"
    remote cp agents || status=1
    echo "==== examples: oracle and cluster, matrix by matrix; checks through Services"
    remote cp examples "${examples[@]}" || status=1
    echo "==== drops"
    remote worker-1 drops || status=1
    echo "==== metrics"
    remote cp prometheus || status=1
    return "$status"
}

if [ "${1:-}" = --on-node ]; then
    shift
    on_node "$@"
else
    from_host "$@"
fi

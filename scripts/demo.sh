#!/usr/bin/env bash
# `make demo`: a two-node lab with one agent per node enforcing the examples (iptables;
# `BACKEND=ebpf make demo` for the eBPF dataplane).
# For each example it shows what the policies mean (`picket explain --matrix`, the
# oracle) beside what the lab observes (`picket lab matrix`), and one denied connection
# explained in words; then connections through the three tiers' Services, a locked pod
# resolving names through the kube-dns Service with example 05's DNS allow and failing
# without it, the drop log of what the agents denied, audit mode and the metrics.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
picket=.venv/bin/picket

banner() { printf '\n==== %s ====\n' "$*"; }

# The namespaces an example creates (what it applies lives in them only).
own_namespaces() {
    .venv/bin/python -c '
import sys, yaml
docs = yaml.safe_load_all(open(sys.argv[1]))
print(",".join(d["metadata"]["name"] for d in docs if d and d["kind"] == "Namespace"))' "$1"
}

# One example: apply it, wait for its pods, compare oracle and lab on its main port,
# among the example's own pods (example 05's DNS pod is the lab's own in the lab, and a
# stand-in in the oracle's manifests: stand-in/ is never applied).
show_example() {
    local folder="$1" port namespaces pair src dst
    banner "$(head -n1 "$folder/README.md" | sed 's/^# *//')  ($folder)"
    port="$(awk '/^matrix /{print $2; exit}' "$folder/expected.txt")"
    namespaces="$(own_namespaces "$folder/cluster.yaml")"
    kubectl apply -f "$folder/cluster.yaml" -f "$folder/policies.yaml" >/dev/null
    kubectl wait --for=condition=Ready pod --all -A --timeout=60s >/dev/null
    sleep 1  # the agents program within milliseconds; give the probes a quiet start
    echo "-- what the policies mean (picket explain, the oracle):"
    "$picket" explain -f "$folder" --matrix --port "$port" --namespaces "$namespaces" | tail -n +2
    echo "-- what the lab enforces (picket lab matrix; r = let through, nothing listens there):"
    "$picket" lab matrix --outcomes --namespaces "$namespaces" \
        --port "${port%/*}" --protocol "${port#*/}" | tail -n +2
    pair="$("$picket" explain -f "$folder" --matrix --port "$port" -o json \
        --namespaces "$namespaces" | .venv/bin/python -c '
import json, sys
doc = json.load(sys.stdin)
print(next((f"{s} {d}" for s, row in doc["results"].items() for d, ok in row.items()
            if not ok), ""))')"
    if [ -n "$pair" ]; then
        read -r src dst <<<"$pair"
        echo "-- why $src cannot reach $dst:"
        "$picket" explain -f "$folder" --from "$src" --to "$dst" --port "$port" | head -n1 || true
        echo "-- and the lab agrees: $("$picket" lab probe "$src" "$dst" "$port" || true)"
    fi
}

trap '"$picket" lab down >/dev/null 2>&1 || true' EXIT
backend="${BACKEND:-iptables}"
banner "picket lab up --nodes 2 --backend $backend"
"$picket" lab down >/dev/null
KUBECONFIG="$("$picket" lab up --nodes 2 --backend "$backend" | tail -n1)"
export KUBECONFIG
kubectl get nodes -o wide

demo_start="$(date +%s)"
for example in examples/01-three-tier examples/03-and-vs-or examples/05-default-deny-with-dns \
               examples/07-port-range; do
    show_example "$example"
done

banner "through Services (examples/01): kube-proxy sends a ClusterIP to the pod, policy judges the pod"
kubectl get services -n shop
# kube-proxy programs a new Service within milliseconds of its EndpointSlice: wait for it.
for _ in $(seq 20); do
    "$picket" lab probe shop/frontend svc/shop/backend 80 >/dev/null && break
    sleep 0.5
done
for src in shop/frontend shop/database; do
    echo "-- $src -> svc/shop/backend:80 (the backend's port http, 8080):" \
        "$("$picket" lab probe "$src" svc/shop/backend 80 || true)"
done
echo "-- shop/backend -> svc/shop/database:5432: $("$picket" lab probe shop/backend \
    svc/shop/database 5432 || true)"

banner "cluster DNS (examples/05): a locked pod asks the kube-dns Service (picket lab resolve)"
for name in kube-dns.kube-system b; do
    echo "-- locked/a resolves $name, allow-dns in place:"
    "$picket" lab resolve locked/a "$name" || true
done
echo "-- over TCP too: $("$picket" lab resolve locked/a b --tcp 2>/dev/null || true)"
kubectl delete networkpolicy -n locked allow-dns >/dev/null
sleep 1
echo "-- kubectl delete networkpolicy allow-dns; locked/a resolves b:" \
    "$("$picket" lab resolve locked/a b --timeout 1 2>/dev/null || true)" \
    "(the default deny drops the query)"
kubectl apply -f examples/05-default-deny-with-dns/policies.yaml >/dev/null
sleep 1
echo "-- allow-dns applied again: $("$picket" lab resolve locked/a b 2>/dev/null || true)"
echo "-- and a name is no permission: locked/a -> svc/locked/b:80:" \
    "$("$picket" lab probe locked/a svc/locked/b 80 || true)"

banner "the drop log: what the agents denied above (picket drops; records close after 5 s)"
sleep 6
"$picket" drops --since "@$demo_start" -n 15

banner "audit mode: kubectl annotate namespace shop picket.io/enforcement=audit"
kubectl annotate namespace shop picket.io/enforcement=audit >/dev/null
sleep 1
audit_start="$(date +%s)"
echo "-- shop/frontend -> shop/database:5432 is denied by policy, and now: $("$picket" lab probe \
    shop/frontend shop/database 5432 || true)"
sleep 6
"$picket" drops --since "@$audit_start" --verdict would-drop
kubectl annotate namespace shop picket.io/enforcement- >/dev/null
sleep 1
echo "-- annotation removed, enforced again: $("$picket" lab probe shop/frontend \
    shop/database 5432 || true)"

banner "metrics: each agent's /metrics (picket lab metrics; docs/metrics.md)"
"$picket" lab metrics picket_dropped_
"$picket" lab metrics picket_programming_latency_seconds_count
"$picket" lab metrics picket_local_endpoints

banner "what node-1 programs (picket compile --backend $backend, for the three-tier example)"
"$picket" compile -f examples/01-three-tier --node node-1 --backend "$backend"

banner "picket lab status"
"$picket" lab status
"$picket" lab down >/dev/null
trap - EXIT

banner "done"
echo "make test holds every example to its expected.txt in the lab, and the oracle to it too."

#!/usr/bin/env bash
# `make demo`: until a dataplane lands, (1) the offline walkthrough of the examples
# with `picket explain` (the oracle): each scenario's truth table on its main port, one
# connection explained in words, the compiled IR of one node; then (2) the lab: a
# two-node cluster in network namespaces running the three-tier example, with the
# matrix the lab observes (no agents yet: everything connects) beside the oracle's.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
picket=.venv/bin/picket

banner() { printf '\n==== %s ====\n' "$*"; }

for folder in examples/*/; do
    folder="${folder%/}"
    banner "$(head -n1 "$folder/README.md" | sed 's/^# *//')  ($folder)"
    # The first matrix line of expected.txt names the scenario's main port.
    port="$(awk '/^matrix /{print $2; exit}' "$folder/expected.txt")"
    namespaces="$(awk '/^matrix /{sub("namespaces=", "", $3); print $3; exit}' "$folder/expected.txt")"
    "$picket" explain -f "$folder" --matrix --port "$port" ${namespaces:+--namespaces "$namespaces"}
    # Explain the first denied pair of that table in plain words.
    pair="$("$picket" explain -f "$folder" --matrix --port "$port" -o json \
        ${namespaces:+--namespaces "$namespaces"} | .venv/bin/python -c '
import json, sys
doc = json.load(sys.stdin)
print(next((f"{s} {d}" for s, row in doc["results"].items() for d, ok in row.items()
            if not ok), ""))')"
    if [ -n "$pair" ]; then
        read -r src dst <<<"$pair"
        echo
        "$picket" explain -f "$folder" --from "$src" --to "$dst" --port "$port" || true
    fi
done

banner "what node-1 would program for the three-tier example (picket compile)"
"$picket" compile -f examples/01-three-tier --node node-1

banner "the lab: two nodes in network namespaces, the three-tier example applied"
trap '"$picket" lab down >/dev/null 2>&1 || true' EXIT
"$picket" lab down >/dev/null
kubeconfig="$("$picket" lab up --nodes 2 | tail -n1)"
export KUBECONFIG="$kubeconfig"
kubectl apply -f examples/01-three-tier/
kubectl wait --for=condition=Ready pod --all -n shop --timeout=60s
kubectl get pods -n shop -o wide
"$picket" lab status
echo
echo "-- each connection: what the policies say (picket explain) and what the lab observes"
echo "   (no agents yet: nothing is enforced, so denied connections still connect)"
for pair in "shop/backend shop/database 5432" "shop/frontend shop/database 5432" \
            "shop/frontend shop/backend 8080" "shop/database shop/backend 8080"; do
    read -r src dst port <<<"$pair"
    says="$("$picket" explain -f examples/01-three-tier --from "$src" --to "$dst" \
        --port "$port" | head -n1 | cut -d: -f1)" || true
    seen="$("$picket" lab probe "$src" "$dst" "$port")" || true
    printf '  %-14s -> %-14s %5s/TCP  policy: %-8s lab: %s\n' "$src" "$dst" "$port" \
        "$says" "$seen"
done
"$picket" lab down >/dev/null
trap - EXIT

banner "done"
echo "Every explain table above is checked against examples/*/expected.txt by 'make test'."
echo "Enforcement in the lab arrives with the iptables and eBPF dataplanes."

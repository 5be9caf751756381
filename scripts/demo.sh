#!/usr/bin/env bash
# `make demo`: until the lab and a dataplane land, the offline walkthrough of the
# examples with `picket explain` (the oracle): each scenario's truth table on its
# main port, one connection explained in words, and the compiled IR of one node.
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

banner "done"
echo "Every table above is checked against examples/*/expected.txt by 'make test'."
echo "The network-namespace lab with enforcing agents replaces this walkthrough once it lands."

#!/usr/bin/env bash
# Prometheus on the control plane (Debian's package), scraping every agent's /metrics.
# Targets are the nodes' addresses from the Vagrantfile (file-based discovery): the
# agents use the host network, so a node's address is its agent's address, and the list
# does not depend on the cluster being up. In a cluster, use the pods' prometheus.io
# annotations or the headless Service instead (docs/deploy.md).
#
#   prometheus.sh                     # write /etc/prometheus/, check it, restart
#   prometheus.sh --config-only DIR   # only write the files into DIR (tests)
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

METRICS_PORT=9402  # the agents' --metrics-addr (daemonset/base/30-daemonset.yaml)

write_config() {
    local dir="$1" name address cidr first=1
    mkdir -p "$dir"
    cat >"$dir/prometheus.yml" <<YAML
# Written by vagrant/prometheus.sh.
global:
  scrape_interval: 15s
  evaluation_interval: 15s
scrape_configs:
- job_name: prometheus
  static_configs:
  - targets: [localhost:9090]
- job_name: picket
  file_sd_configs:
  - files: [$dir/picket-agents.json]
YAML
    {
        printf '['
        while read -r name address cidr; do
            [ "$first" = 1 ] || printf ','
            first=0
            printf '\n  {"targets": ["%s:%s"], "labels": {"node": "%s", "pod_cidr": "%s"}}' \
                "$address" "$METRICS_PORT" "$name" "$cidr"
        done < <(nodes_table)
        printf '\n]\n'
    } >"$dir/picket-agents.json"
}

main() {
    if [ "${1:-}" = --config-only ]; then
        write_config "${2:?--config-only needs a directory}"
        return 0
    fi
    write_config /etc/prometheus
    promtool check config /etc/prometheus/prometheus.yml
    systemctl enable --quiet prometheus
    systemctl restart prometheus
    log "Prometheus on http://$PICKET_SERVER:9090 scrapes job \"picket\" on every node"
}

main "$@"

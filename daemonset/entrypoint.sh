#!/usr/bin/env bash
# The image's entry point: the `picket` command, once BCC has a kernel headers tree (the
# node's own, mounted under /host, else the image's Debian tree; the same script as
# `make setup`). The arguments are picket's: `agent --backend ebpf`, `explain ...`.
set -euo pipefail
bash /opt/picket/src/scripts/kernel-headers.sh --node /host
exec picket "$@"

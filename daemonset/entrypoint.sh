#!/usr/bin/env bash
# The image's entry point: the `picket` command, once BCC has a kernel headers tree (the
# node's own, mounted under /host, else the image's Debian tree; the same script as
# `make setup`) where it compiles. The arguments are picket's: `agent --backend ebpf`,
# `explain ...`.
set -euo pipefail
# BCC compiles for the eBPF agent only (not for its --cleanup, nor for the iptables
# backend, whose DaemonSet mounts no headers and no writable /lib/modules).
if [[ " $* " == *" --backend ebpf "* && " $* " != *" --cleanup "* ]]; then
    bash /opt/picket/src/scripts/kernel-headers.sh --node /host
fi
exec picket "$@"

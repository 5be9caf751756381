#!/usr/bin/env bash
# Build the agent's image here and run it in the netns lab as each backend's overlay
# runs it, with exactly that overlay's privileges: the image's root filesystem and the
# overlay's mounts, only its capabilities in the bounding set. iptables
# (daemonset/iptables/): NET_ADMIN and NET_RAW, the xtables lock and the journal, no BPF
# filesystem, no kernel headers, and a seccomp filter refusing what the runtime's
# default profile refuses a container without SYS_ADMIN, BPF or PERFMON (bpf(2),
# perf_event_open, mount, setns, ...: a denylist standing in for the runtime's
# allowlist). eBPF (daemonset/ebpf/): NET_ADMIN, NET_RAW, BPF and PERFMON, no seccomp
# filter (its Unconfined), of the BPF filesystem only the node's /sys/fs/bpf/picket as
# /sys/fs/bpf, /run/picket, the node's /lib/modules and /usr/src under /host. Then checks
# that each agent is ready, that the three-tier example is enforced, that the drop
# counter names the namespace, that agents restarted on what their predecessors left
# (pins, link, numbering) are ready and enforce again, and that the uninstall's command with its privileges
# (daemonset/uninstall/: NET_ADMIN, NET_RAW, Picket's BPF directory) leaves nothing of
# Picket on the nodes. First it checks that the image holds no lab: neither the
# `lab` package nor any distribution of the lab extra that the agent's own dependencies
# do not require imports in the image's venv. Not part of `make test` (the build downloads ~500 MB);
# docs/deploy.md says what it showed.
#
#   sudo daemonset/check-image.sh
#
# Without a registry (this project's machine reaches only Debian and PyPI), the Debian
# base image is made by debootstrap and named as the Containerfile's FROM. Behind a
# TLS-intercepting proxy, PIP_CERT (or REQUESTS_CA_BUNDLE) names the CA bundle pip uses
# inside the build.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
picket="$repo/.venv/bin/picket"
image=localhost/picket:0.1.0
base=docker.io/library/debian:bookworm-slim
work="$(mktemp -d)"
containers=()
agents=()  # PIDs: each exec chain (nsenter, unshare, chroot, setpriv, entry point) keeps one
mounted_bpffs=0

log() { printf 'check-image: %s\n' "$*" >&2; }

# The lab's package and the lab extra's distributions (pyproject.toml), none of which
# belongs in the node image; tests/unit/test_image_has_no_lab.py keeps this list equal
# to the extra. NAME:MODULE where a distribution's module has another name.
LAB_MODULES=(lab aiohttp cryptography jsonpatch dnspython:dns)
# Run by a python as `python -I -c "$NO_LAB_CHECK" DIST NAME[:MODULE]...`: exits 0 only if
# no MODULE imports, except one that DIST's own (non-extra) dependencies require, directly
# or not: the kubernetes client requires aiohttp from version 36 on, so aiohttp in the
# image can be the agent's and not the lab's. A module that is found but fails to import
# still counts as present. (-I: the current directory is not on the path, so only what
# is installed counts.)
NO_LAB_CHECK='
import importlib, importlib.metadata as md, re, sys

def key(requirement):
    return re.match(r"[A-Za-z0-9._-]+", requirement).group(0).lower().replace("_", "-")

def closure(dist):
    seen, todo = set(), [dist]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            todo += [key(r) for r in md.requires(name) or [] if "extra ==" not in r]
        except md.PackageNotFoundError:
            pass
    return seen

def imports(name):
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as exc:
        return exc.name != name
    except Exception:
        return True
    return True

agent = closure(sys.argv[1])
checked = [(arg.partition(":")[0], arg.partition(":")[2] or arg) for arg in sys.argv[2:]]
found = [name for name, module in checked if imports(module)]
present = [name for name in found if name not in agent]
for name in found:
    if name in agent:
        print(f"allowed: {name} (required by {sys.argv[1]}\x27s own dependencies)")
if present:
    print("present: " + ", ".join(present))
sys.exit(1 if present else 0)
'

stop_agents() {
    if [ "${#agents[@]}" -gt 0 ]; then
        kill "${agents[@]}" 2>/dev/null || true
        wait "${agents[@]}" 2>/dev/null || true
    fi
    agents=()
}

# shellcheck disable=SC2317  # run by the EXIT trap
cleanup() {
    local ctr
    stop_agents
    for ctr in "${containers[@]}"; do
        buildah umount "$ctr" >/dev/null 2>&1 || true
        buildah rm "$ctr" >/dev/null 2>&1 || true
    done
    "$picket" lab down >/dev/null 2>&1 || true
    if [ "$mounted_bpffs" = 1 ]; then
        umount /sys/fs/bpf 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

need_tools() {
    local missing=()
    command -v buildah >/dev/null || missing+=(buildah)
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    /usr/bin/python3 -c 'import seccomp' 2>/dev/null || missing+=(python3-seccomp)
    if [ "${#missing[@]}" -gt 0 ]; then
        log "installing ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
            "${missing[@]}" >/dev/null
    fi
}

base_image() {
    if buildah inspect --type image "$base" >/dev/null 2>&1; then
        return 0
    fi
    if buildah pull -q "$base" >/dev/null 2>&1; then
        return 0
    fi
    log "no registry: debootstrap bookworm as $base"
    debootstrap --variant=minbase bookworm "$work/rootfs" http://deb.debian.org/debian >/dev/null
    local ctr mnt
    ctr="$(buildah from scratch)"
    mnt="$(buildah mount "$ctr")"
    cp -a "$work/rootfs/." "$mnt/"
    buildah umount "$ctr" >/dev/null
    buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$ctr"
    buildah commit -q "$ctr" "$base" >/dev/null
    buildah rm "$ctr" >/dev/null
}

build() {
    local volumes=() ca="${PIP_CERT:-${REQUESTS_CA_BUNDLE:-}}"
    if [ -n "$ca" ]; then
        printf '[global]\ncert = /run/build-ca.crt\n' >"$work/pip.conf"
        volumes=(-v "$ca:/run/build-ca.crt:ro" -v "$work/pip.conf:/etc/pip.conf:ro")
    fi
    log "building $image (daemonset/Containerfile)"
    buildah bud -q --pull=never --isolation chroot --network host "${volumes[@]}" \
        -f "$repo/daemonset/Containerfile" -t "$image" "$repo" >/dev/null
}

# Refuses (EPERM) what the runtime's default seccomp profile refuses a container without
# SYS_ADMIN, BPF or PERFMON, then runs the command it is given.
SECCOMP_DEFAULT='
import errno, os, sys, seccomp
refused = """bpf perf_event_open mount umount2 unshare setns pivot_root keyctl add_key
request_key ptrace process_vm_readv process_vm_writev kexec_load kexec_file_load
init_module finit_module delete_module open_by_handle_at name_to_handle_at reboot swapon
swapoff syslog acct settimeofday clock_settime clock_adjtime adjtimex quotactl
fanotify_init userfaultfd lookup_dcookie iopl ioperm uselib""".split()
f = seccomp.SyscallFilter(seccomp.ALLOW)
for name in refused:
    try:
        f.add_rule(seccomp.ERRNO(errno.EPERM), name)
    except (RuntimeError, ValueError):
        pass  # not a system call of this architecture
f.load()
os.execvp(sys.argv[1], sys.argv[1:])
'

# Runs, in the image on lab node $1, the image's entry point with $2... (picket's
# arguments) under backend $3's overlay's privileges ("uninstall": the uninstall's);
# in the background, its output in $work/$4.log.
run_in_image() {
    local node="$1" args="$2" privileges="$3" name="$4" ctr mnt caps filter=no
    ctr="$(buildah from "$image")"
    containers+=("$ctr")
    mnt="$(buildah mount "$ctr")"
    case "$privileges" in
        iptables | uninstall) caps=-all,+net_admin,+net_raw filter=yes ;;
        ebpf) caps=-all,+net_admin,+net_raw,+bpf,+perfmon ;;
    esac
    mkdir -p /run/picket /sys/fs/bpf/picket
    touch /run/xtables.lock
    # shellcheck disable=SC2016  # the inner bash expands these
    nsenter --net="/run/netns/picket-$node" unshare -m --propagation private bash -c '
        set -e
        mnt=$1 node=$2 privileges=$3 caps=$4 filter=$5 args=$6 seccomp=$7
        mount --bind "$mnt" "$mnt"  # the root, made read-only once the mounts are in
        mount -t proc proc "$mnt/proc"
        mount --rbind /dev "$mnt/dev"
        mount --bind /sys "$mnt/sys"
        mount -o remount,bind,ro "$mnt/sys"
        touch "$mnt/run/xtables.lock"
        mount --bind /run/xtables.lock "$mnt/run/xtables.lock"
        mount -t tmpfs tmpfs "$mnt/tmp"
        if [ "$privileges" != iptables ]; then
            # Only Picket'"'"'s own directory of the BPF filesystem, as the overlays do.
            mount --bind /sys/fs/bpf/picket "$mnt/sys/fs/bpf"
            mkdir -p "$mnt/run/picket"
            mount --bind /run/picket "$mnt/run/picket"
        fi
        if [ "$privileges" = ebpf ]; then
            mkdir -p "$mnt/host/lib/modules" "$mnt/host/usr/src"
            mount --bind /lib/modules "$mnt/host/lib/modules"
            mount --bind /usr/src "$mnt/host/usr/src"
            mount -t tmpfs tmpfs "$mnt/lib/modules"
        fi
        cp /run/picket-lab/kubeconfig "$mnt/tmp/kubeconfig"
        mount -o remount,bind,ro "$mnt"  # readOnlyRootFilesystem
        run=(chroot "$mnt" /usr/bin/env -i PATH=/opt/picket/venv/bin:/usr/sbin:/usr/bin:/sbin:/bin
            NODE_NAME="$node" /usr/bin/setpriv --bounding-set "$caps" --
            /usr/local/bin/picket-entrypoint)
        # shellcheck disable=SC2086  # the arguments are words
        if [ "$filter" = yes ]; then
            exec /usr/bin/python3 -c "$seccomp" "${run[@]}" $args
        fi
        # shellcheck disable=SC2086
        exec "${run[@]}" $args
    ' _ "$mnt" "$node" "$privileges" "$caps" "$filter" "$args" "$SECCOMP_DEFAULT" \
        >"$work/$name.log" 2>&1 &
    agents+=("$!")
}

# The image's agent on lab node $1 with backend $2, as its overlay runs it.
run_agent() {
    local node="$1" backend="$2" args
    args="agent --backend $backend --metrics-addr :9402 --kubeconfig /tmp/kubeconfig"
    [ "$backend" = ebpf ] && args+=" --bpf-pin-root /sys/fs/bpf"
    run_in_image "$node" "$args" "$backend" "agent-$node-$backend"
}

# The image's own python, in the image's root filesystem, imports no lab module.
check_no_lab() {
    local ctr mnt
    ctr="$(buildah from "$image")"
    containers+=("$ctr")
    mnt="$(buildah mount "$ctr")"
    log "the image holds no lab package and none of the lab-only distributions"
    # From inside the mount point, so the working directory is the image's root.
    if ! (cd "$mnt" && chroot "$mnt" /usr/bin/env -i PATH=/opt/picket/venv/bin:/usr/bin:/bin \
        /opt/picket/venv/bin/python -I -c "$NO_LAB_CHECK" picket "${LAB_MODULES[@]}"); then
        log "the image holds lab code or the lab's dependencies (above)"
        return 1
    fi
}

fetch() {
    python3 -c 'import sys, urllib.request
try:
    print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())
except OSError as exc:
    print(exc)' "$1"
}

wait_ready() {
    local backend="$1" node deadline=$((SECONDS + 120))
    for node in 1 2; do
        until fetch "http://198.18.0.$node:9402/readyz" | grep -q '^ok'; do
            if [ "$SECONDS" -ge "$deadline" ]; then
                log "node-$node's agent never became ready:"
                tail -n 20 "$work"/agent-node-"$node"-"$backend".log >&2
                return 1
            fi
            sleep 1
        done
    done
}

enforced() {
    local denied allowed
    denied="$("$picket" lab probe shop/frontend shop/database 5432 || true)"
    allowed="$("$picket" lab probe shop/backend shop/database 5432 || true)"
    echo "  frontend -> database:5432: $denied (want timeout)"
    echo "  backend  -> database:5432: $allowed (want connected)"
    if [ "$denied" != timeout ] || [[ "$allowed" != connected* ]]; then
        log "not enforced"
        return 1
    fi
}

check_backend() {
    local backend="$1" node ok=0 deadline counters=""
    log "backend $backend: agents from the image on node-1 and node-2"
    "$picket" lab down >/dev/null 2>&1
    KUBECONFIG="$("$picket" lab up --nodes 2 --backend none | tail -n1)"
    export KUBECONFIG
    if ! mountpoint -q /sys/fs/bpf; then
        mount -t bpf bpf /sys/fs/bpf  # a node's systemd mounts it at boot
        mounted_bpffs=1
    fi
    kubectl apply -f "$repo/examples/01-three-tier/" >/dev/null
    kubectl wait --for=condition=Ready pod --all -A --timeout=60s >/dev/null
    run_agent node-1 "$backend"
    run_agent node-2 "$backend"
    wait_ready "$backend" || return 1
    enforced || ok=1
    # Counters come from the agents' timed reading (every 5 s: docs/metrics.md).
    deadline=$((SECONDS + 15))
    until grep -q 'namespace="shop",reason="policy"' <<<"${counters:-}"; do
        [ "$SECONDS" -ge "$deadline" ] && break
        sleep 1
        counters="$(for node in 1 2; do fetch "http://198.18.0.$node:9402/metrics"; done \
            | grep '^picket_dropped_packets_total' || true)"
    done
    echo "  ${counters:-no drop counters}"
    grep -q 'namespace="shop",reason="policy"' <<<"${counters:-}" || { log "no drop counted"; ok=1; }
    # A restart (or an upgrade) starts on what the agents left: pins, link, numbering.
    # With only the overlay's capabilities, BCC could not reopen pinned maps (it
    # reopens them by id, which needs SYS_ADMIN); the agent makes fresh ones.
    log "backend $backend: the agents stopped and started again on what they left"
    stop_agents
    run_agent node-1 "$backend"
    run_agent node-2 "$backend"
    wait_ready "$backend" || return 1
    enforced || ok=1
    stop_agents
    for node in node-1 node-2; do
        # The uninstall's command (daemonset/uninstall/uninstall.yaml), its privileges.
        # As the uninstall runs them: both twice, the second pass must succeed.
        for step in "ebpf --bpf-pin-root /sys/fs/bpf --cleanup" "iptables --cleanup"; do
            run_in_image "$node" "agent --backend $step" uninstall "uninstall-$node"
            wait "${agents[@]}" || true
            agents=()
        done
        for step in "ebpf --bpf-pin-root /sys/fs/bpf --cleanup" "iptables --cleanup"; do
            run_in_image "$node" "agent --backend $step" uninstall "uninstall-$node"
            if ! wait "${agents[@]}"; then
                log "the uninstall's 'picket agent --backend $step' failed on $node:"
                tail -n 20 "$work/uninstall-$node.log" >&2
                ok=1
            fi
            agents=()
        done
        left="$(for save in iptables-legacy-save iptables-nft-save ip6tables-legacy-save ip6tables-nft-save; do
            nsenter --net="/run/netns/picket-$node" "$save" 2>/dev/null
        done | grep -c PICKET || true)"
        pins="$(find "/sys/fs/bpf/picket/$node" -mindepth 1 2>/dev/null | wc -l)"
        echo "  $node after the uninstall: $left iptables/ip6tables lines, $pins pins (want 0, 0)"
        if [ "$left" != 0 ] || [ "$pins" != 0 ]; then
            log "Picket left on $node"
            ok=1
        fi
    done
    return "$ok"
}

[ "$(id -u)" = 0 ] || { log "needs root"; exit 1; }
need_tools
base_image
build
status=0
check_no_lab || status=1
for backend in iptables ebpf; do
    check_backend "$backend" || status=1
done
if [ "$status" = 0 ]; then
    log "the image enforces with each backend under its own overlay's privileges, and the uninstall leaves nothing"
fi
exit "$status"

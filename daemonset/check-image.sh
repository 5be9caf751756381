#!/usr/bin/env bash
# Build the agent's image here and run it in the netns lab as the DaemonSet runs it:
# the image's root filesystem, the DaemonSet's mounts (/sys read-only with the BPF
# filesystem bound in, /run/picket, the xtables lock, the node's /lib/modules and
# /usr/src under /host), only NET_ADMIN, NET_RAW, BPF and PERFMON in the bounding set,
# no seccomp filter (the DaemonSet's Unconfined), for both backends; then checks that
# each agent is ready, that the three-tier example is enforced, and that the drop
# counter names the namespace. First it checks that the image holds no lab: neither the
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

# The image's agent on lab node $1 with backend $2, as the DaemonSet runs it.
run_agent() {
    local node="$1" backend="$2" ctr mnt
    ctr="$(buildah from "$image")"
    containers+=("$ctr")
    mnt="$(buildah mount "$ctr")"
    mkdir -p /run/picket
    touch /run/xtables.lock
    # shellcheck disable=SC2016  # the inner bash expands these
    nsenter --net="/run/netns/picket-$node" unshare -m --propagation private bash -c '
        set -e
        mnt=$1 node=$2 backend=$3
        mount -t proc proc "$mnt/proc"
        mount --rbind /dev "$mnt/dev"
        mount --bind /sys "$mnt/sys"
        mount -o remount,bind,ro "$mnt/sys"
        mount --bind /sys/fs/bpf "$mnt/sys/fs/bpf"
        mkdir -p "$mnt/run/picket" "$mnt/host/lib/modules" "$mnt/host/usr/src"
        mount --bind /run/picket "$mnt/run/picket"
        touch "$mnt/run/xtables.lock"
        mount --bind /run/xtables.lock "$mnt/run/xtables.lock"
        mount --bind /lib/modules "$mnt/host/lib/modules"
        mount --bind /usr/src "$mnt/host/usr/src"
        mount -t tmpfs tmpfs "$mnt/tmp"
        mount -t tmpfs tmpfs "$mnt/lib/modules"
        cp /run/picket-lab/kubeconfig "$mnt/tmp/kubeconfig"
        exec chroot "$mnt" /usr/bin/env -i PATH=/opt/picket/venv/bin:/usr/sbin:/usr/bin:/sbin:/bin \
            NODE_NAME="$node" /usr/bin/setpriv --bounding-set -all,+net_admin,+net_raw,+bpf,+perfmon -- \
            /usr/local/bin/picket-entrypoint agent --backend "$backend" --metrics-addr :9402 \
            --kubeconfig /tmp/kubeconfig
    ' _ "$mnt" "$node" "$backend" >"$work/agent-$node-$backend.log" 2>&1 &
    agents+=("$!")
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

check_backend() {
    local backend="$1" node ok=0 deadline
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
    deadline=$((SECONDS + 120))
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
    denied="$("$picket" lab probe shop/frontend shop/database 5432 || true)"
    allowed="$("$picket" lab probe shop/backend shop/database 5432 || true)"
    echo "  frontend -> database:5432: $denied (want timeout)"
    echo "  backend  -> database:5432: $allowed (want connected)"
    [ "$denied" = timeout ] && [[ "$allowed" == connected* ]] || ok=1
    counters="$(for node in 1 2; do fetch "http://198.18.0.$node:9402/metrics"; done \
        | grep '^picket_dropped_packets_total' || true)"
    echo "  ${counters:-no drop counters}"
    grep -q 'namespace="shop",reason="policy"' <<<"$counters" || ok=1
    stop_agents
    for node in node-1 node-2; do
        nsenter --net="/run/netns/picket-$node" "$picket" agent --node "$node" \
            --backend "$backend" --cleanup >/dev/null
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
    log "the image enforces with both backends under the DaemonSet's privileges"
fi
exit "$status"

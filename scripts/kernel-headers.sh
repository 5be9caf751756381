#!/usr/bin/env bash
# Give BCC a kernel headers tree: it compiles the TC programs against
# /lib/modules/$(uname -r)/build (and .../source where the tree is split in two).
#
#   kernel-headers.sh              # on a host (make setup)
#   kernel-headers.sh --node /host # in the agent's image: the node's / lib/modules and
#                                  # /usr/src are mounted read-only under /host
#
# In order: headers already at build: nothing to do. With --node, the node's own headers
# for its running kernel, if it has them. Else the newest distribution tree under
# /usr/src (linux-headers-amd64): the programs use only UAPI structs, which are stable
# across kernel versions, so another version's tree compiles them the same way.
# Never fails: a node without headers still runs the iptables backend, and the eBPF
# backend says in one line which tree it is missing.
# KERNEL_HEADERS_ROOT (tests only): act on a copy of / under that directory.
set -euo pipefail

log() { printf 'kernel-headers: %s\n' "$*" >&2; }

here="${KERNEL_HEADERS_ROOT:-}"
release="$(uname -r)"
moddir="$here/lib/modules/$release"

# The node's tree NAME (build or source) for the running kernel, as seen from here: the
# node's link names a path on the node, which is ROOT + that path in this container.
node_tree() {
    local root="$1" name="$2" entry target
    entry="$root/lib/modules/$release/$name"
    if [ -L "$entry" ]; then
        target="$(readlink "$entry")"
        case "$target" in
            /*) target="$root$target" ;;
            *) target="$root/lib/modules/$release/$target" ;;
        esac
    else
        target="$entry"
    fi
    if [ -d "$target/include" ]; then
        printf '%s\n' "$target"
    fi
}

link_node_headers() {
    local root="$1" build source
    build="$(node_tree "$root" build)"
    [ -n "$build" ] || return 1
    source="$(node_tree "$root" source)"
    ln -sfn "$build" "$moddir/build"
    if [ -n "$source" ]; then
        ln -sfn "$source" "$moddir/source"
    fi
    log "using the node's headers for $release: $build"
}

link_distribution_headers() {
    local arch_dir common_dir
    arch_dir="$(find "$here/usr/src" -maxdepth 1 -name 'linux-headers-*-amd64' | sort -V | tail -n1)"
    common_dir="$(find "$here/usr/src" -maxdepth 1 -name 'linux-headers-*-common' | sort -V | tail -n1)"
    if [ -z "$arch_dir" ] || [ -z "$common_dir" ]; then
        log "no linux-headers tree under /usr/src; the eBPF backend will not compile"
        return 0
    fi
    log "linking $moddir/build -> $arch_dir (distribution headers; UAPI-only programs)"
    ln -sfn "$arch_dir" "$moddir/build"
    ln -sfn "$common_dir" "$moddir/source"
}

main() {
    local node_root=""
    case "${1:-}" in
        --node) node_root="${2:?--node needs a directory}" ;;
        "") ;;
        *) log "usage: kernel-headers.sh [--node ROOT]"; exit 2 ;;
    esac
    [ -e "$moddir/build/include" ] && return 0
    if ! mkdir -p "$moddir" 2>/dev/null || [ ! -w "$moddir" ]; then
        log "no kernel headers at $moddir/build, and no right to link them (needs root)"
        return 0
    fi
    if [ -n "$node_root" ] && link_node_headers "$node_root"; then
        return 0
    fi
    link_distribution_headers
}

main "$@"

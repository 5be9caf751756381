#!/usr/bin/env bash
# Vagrant provisioning, every node, once (again with `vagrant provision`): packages,
# kernel modules, the node's kernel headers, and the agent's image, built here from the
# checkout and left where k3s imports images when it starts.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

install_packages() {
    local cni_packages
    # The [cni] section of Picket's one list (the reference plugins, as in the netns
    # lab), and what provisioning itself uses: buildah and crun build the image,
    # iptables for k3s and the pods' masquerade, curl for k3s's installer, python3 for
    # the CNI generator and check.sh's helper.
    cni_packages="$(bash "$CHECKOUT/scripts/debian-packages.sh" cni)"
    # shellcheck disable=SC2086  # one package per word
    apt_install $cni_packages buildah crun iptables curl ca-certificates python3 python3-yaml
    # The node's own headers let BCC compile against exactly this kernel; when the
    # archive no longer has them for the box's kernel, the image's Debian tree serves.
    apt_install "linux-headers-$(uname -r)" \
        || log "no linux-headers-$(uname -r) in the archive: the agent uses its image's tree"
}

# What the agent's dataplanes use, loaded now rather than on first use, and at boot.
load_modules() {
    local module modules=(ip_set ip_set_hash_ip ip_set_hash_net ip_set_hash_ipport xt_set
        xt_conntrack xt_comment xt_multiport nfnetlink_log xt_NFLOG nf_conntrack_netlink
        sch_ingress cls_bpf)
    printf '%s\n' "${modules[@]}" >/etc/modules-load.d/picket.conf
    for module in "${modules[@]}"; do
        modprobe "$module" || log "cannot load kernel module $module"
    done
}

# Built on every node from the same checkout: no registry needed. k3s imports the
# tarball at start; when it already runs (a re-provision), import it now.
build_image() {
    local image tarball="$K3S_IMAGES/picket.tar"
    image="$(image_ref)"
    [ -n "$image" ] || die "no image in daemonset/base/30-daemonset.yaml"
    log "building $image from daemonset/Containerfile (a few minutes)"
    # Host network for RUN steps: apt and pip need the internet, and the node has no
    # container network of buildah's own.
    buildah bud --network host -f "$CHECKOUT/daemonset/Containerfile" -t "$image" "$CHECKOUT"
    mkdir -p "$K3S_IMAGES"
    rm -f "$tarball"
    buildah push "$image" "docker-archive:$tarball:$image"
    if systemctl is-active --quiet k3s || systemctl is-active --quiet k3s-agent; then
        k3s ctr --namespace k8s.io images import "$tarball"
        log "imported $image; restart the agents to run it (docs/deploy.md)"
    fi
}

install_packages
load_modules
build_image

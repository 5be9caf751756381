"""The cluster DNS add-on, as kubeadm installs it: Deployment `kube-system/coredns`
(pods labelled `k8s-app: kube-dns`) behind Service `kube-system/kube-dns` at the
cluster's DNS address. Its image is the lab's dnsmasq, which the lab kubelet runs as a
real DNS server (lab/kubelet/dns_pod.py). `picket lab up` creates what is missing and
waits until the DNS pod answers."""

from __future__ import annotations

import time
from typing import Any

from kubernetes import client

from lab.config import DNS_SERVICE_IP, DNS_SERVICE_IP6
from lab.kubelet.dns_pod import DNSMASQ_IMAGE

NAMESPACE = "kube-system"
DEPLOYMENT, SERVICE = "coredns", "kube-dns"
LABELS = {"k8s-app": "kube-dns"}
# (name, port, protocol), as kubeadm's CoreDNS Deployment and Service name them.
PORTS = (("dns", 53, "UDP"), ("dns-tcp", 53, "TCP"), ("metrics", 9153, "TCP"))
READY_WITHIN = 30.0  # seconds


def service_manifest(primary_family: int = 4) -> dict[str, Any]:
    """kube-dns at the cluster's DNS address of its primary Service family (single
    stack, as kubeadm makes it on a dual-stack cluster)."""
    address = DNS_SERVICE_IP if primary_family == 4 else DNS_SERVICE_IP6
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": SERVICE, "namespace": NAMESPACE, "labels": dict(LABELS)},
        "spec": {
            "selector": dict(LABELS),
            "clusterIP": str(address),
            "ports": [
                {"name": n, "port": p, "protocol": proto, "targetPort": p} for n, p, proto in PORTS
            ],
        },
    }


def deployment_manifest() -> dict[str, Any]:
    container = {
        "name": "coredns",
        "image": DNSMASQ_IMAGE,
        "ports": [{"name": n, "containerPort": p, "protocol": proto} for n, p, proto in PORTS],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": DEPLOYMENT, "namespace": NAMESPACE, "labels": dict(LABELS)},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": dict(LABELS)},
            "template": {
                "metadata": {"labels": dict(LABELS)},
                "spec": {"containers": [container]},
            },
        },
    }


def _create(call: Any, *args: Any) -> None:
    """Create unless it exists: what a user changed stays as they left it."""
    try:
        call(*args, _preload_content=False)
    except client.ApiException as exc:
        if exc.status != 409:
            raise


def ensure_cluster_dns(api: client.ApiClient, primary_family: int = 4) -> None:
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
    _create(core.create_namespace, namespace)
    # The Service first, so that nothing else takes the DNS address.
    _create(core.create_namespaced_service, NAMESPACE, service_manifest(primary_family))
    _create(apps.create_namespaced_deployment, NAMESPACE, deployment_manifest())


def wait_cluster_dns(api: client.ApiClient, timeout: float = READY_WITHIN) -> bool:
    """Until the coredns Deployment has a ready replica (its dnsmasq answers), unless
    someone scaled it to none."""
    apps = client.AppsV1Api(api)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        deployment = apps.read_namespaced_deployment(DEPLOYMENT, NAMESPACE)
        wanted = deployment.spec.replicas if deployment.spec.replicas is not None else 1
        ready = (deployment.status.ready_replicas if deployment.status else None) or 0
        if ready >= min(wanted, 1):
            return True
        time.sleep(0.1)
    return False

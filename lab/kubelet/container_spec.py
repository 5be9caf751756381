"""What the lab's container runtime runs for one container of a pod: its command line,
environment, mounts and privileges, worked out from the pod the way a kubelet and a
runtime do (pure: no I/O; lab/kubelet/container.py carries it out).

Honoured: command/args over the image's ENTRYPOINT/CMD with `$(VAR)` expansion; env
values and the downward API's fieldRefs; hostPath and emptyDir volumes, read-only
mounts, the service account's token; the capability bounding set (drop/add, privileged,
else the runtime's default set), allowPrivilegeEscalation and readOnlyRootFilesystem.
Not honoured: seccomp and AppArmor profiles, resources, user IDs other than root;
daemonset/check-image.sh runs the real image with those."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from lab import images

# The set containerd and CRI-O grant a container that asks for nothing else.
DEFAULT_CAPABILITIES = (
    "chown",
    "dac_override",
    "fowner",
    "fsetid",
    "kill",
    "setgid",
    "setuid",
    "setpcap",
    "net_bind_service",
    "net_raw",
    "sys_chroot",
    "mknod",
    "audit_write",
    "setfcap",
)
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


class SpecError(Exception):
    """The pod asks for something the lab's runtime cannot give (named in the message)."""


@dataclass(frozen=True)
class Mount:
    target: str  # in the container
    read_only: bool
    host_path: str | None = None  # a hostPath volume's node path
    host_type: str = ""  # its `type`: DirectoryOrCreate, FileOrCreate, ...
    empty_dir: str | None = None  # an emptyDir volume's name (one per pod)
    service_account: bool = False


@dataclass(frozen=True)
class LaunchSpec:
    name: str
    image: str
    argv: list[str]
    env: dict[str, str]
    mounts: list[Mount] = field(default_factory=list)
    # setpriv's --bounding-set ("-all,+net_admin"), or None for every capability.
    bounding_set: str | None = None
    no_new_privs: bool = False
    read_only_root: bool = False


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion: known names replaced, unknown left as written,
    `$$` an escaped `$`."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return _REFERENCE.sub(one, text)


def field_value(pod: dict[str, Any], path: str, host_ip: str, pod_ip: str) -> str:
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    values = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", "default"),
        "status.hostIP": host_ip,
        "status.podIP": pod_ip,
    }
    if path not in values:
        raise SpecError(f"fieldRef {path!r} is not one the lab's kubelet fills")
    return values[path]


def environment(
    pod: dict[str, Any], container: dict[str, Any], base: dict[str, str], ips: tuple[str, str]
) -> dict[str, str]:
    """The image's and the kubelet's variables, then the container's in order (each may
    refer to those before it)."""
    env = dict(base)
    for entry in container.get("env") or []:
        name = entry["name"]
        source = entry.get("valueFrom")
        if source is None:
            env[name] = expand(str(entry.get("value", "")), env)
        elif "fieldRef" in source:
            env[name] = field_value(pod, source["fieldRef"]["fieldPath"], *ips)
        else:
            raise SpecError(f"env {name}: only value and fieldRef are supported in the lab")
    return env


def command_line(container: dict[str, Any], env: dict[str, str]) -> list[str]:
    """command replaces the ENTRYPOINT, args the CMD (and a command alone drops CMD)."""
    command = container.get("command")
    args = container.get("args")
    if command:
        argv = [*command, *(args or [])]
    else:
        argv = [*images.ENTRYPOINT, *(images.CMD if args is None else args)]
    return [expand(str(a), env) for a in argv]


def capabilities(context: dict[str, Any]) -> str | None:
    if context.get("privileged"):
        return None
    caps = context.get("capabilities") or {}
    drop = {str(c).lower() for c in caps.get("drop") or []}
    add = [str(c).lower() for c in caps.get("add") or []]
    kept = [] if "all" in drop else [c for c in DEFAULT_CAPABILITIES if c not in drop]
    chosen = list(dict.fromkeys([*kept, *add]))
    return ",".join(["-all", *(f"+{c}" for c in chosen)])


def mounts(pod: dict[str, Any], container: dict[str, Any]) -> list[Mount]:
    volumes = {v["name"]: v for v in (pod.get("spec") or {}).get("volumes") or []}
    found = []
    for entry in container.get("volumeMounts") or []:
        name, target = entry["name"], entry["mountPath"]
        read_only = bool(entry.get("readOnly", False))
        volume = volumes.get(name)
        if volume is None:
            raise SpecError(f"volumeMount {name!r}: the pod has no volume of that name")
        if "hostPath" in volume:
            host = volume["hostPath"]
            found.append(Mount(target, read_only, host["path"], host.get("type", "")))
        elif "emptyDir" in volume:
            found.append(Mount(target, read_only, empty_dir=name))
        else:
            raise SpecError(f"volume {name!r}: only hostPath and emptyDir exist in the lab")
    if (pod.get("spec") or {}).get("automountServiceAccountToken", True):
        found.append(Mount(SERVICE_ACCOUNT_DIR, True, service_account=True))
    return found


def launch_spec(
    pod: dict[str, Any],
    container: dict[str, Any],
    kubelet_env: dict[str, str],
    host_ip: str,
    pod_ip: str,
) -> LaunchSpec:
    env = environment(pod, container, {**images.ENV, **kubelet_env}, (host_ip, pod_ip))
    context = container.get("securityContext") or {}
    return LaunchSpec(
        name=container["name"],
        image=container.get("image") or "",
        argv=command_line(container, env),
        env=env,
        mounts=mounts(pod, container),
        bounding_set=capabilities(context),
        no_new_privs=context.get("allowPrivilegeEscalation") is False,
        read_only_root=bool(context.get("readOnlyRootFilesystem", False)),
    )

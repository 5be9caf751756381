"""`python -m lab.kubelet.container SPEC`: the lab's container runtime for one container.

Started by the kubelet in the node's network namespace (a hostNetwork pod), it enters a
mount namespace of its own (mounts propagate from the host, as HostToContainer, and never
back), builds the container's root on a tmpfs (the host's userland read-only, the image
at /opt/picket/src, the lab's virtual environment at /opt/picket/venv, /proc, /dev, a
read-only /sys, an empty /run and /tmp), mounts the pod's volumes and service account,
makes the root read-only if asked, then chroots and execs the command under setpriv with
the container's capability bounding set: the process ends up as the container's, with
the pid the kubelet recorded. SPEC is the JSON the kubelet wrote (lab/kubelet/
picket_pods.py); nothing it mounts outlives the process's mount namespace."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from lab import images, processes

HOST_TREES = ("bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr", "etc")
MARKER = processes.CONTAINER_MARKER


def _mount(*args: str) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"lab container: mount {' '.join(args)}: {done.stderr.strip()}")


def _bind(source: Path | str, target: Path, read_only: bool) -> None:
    _mount("--bind", str(source), str(target))
    if read_only:
        _mount("-o", "remount,bind,ro", str(target))


def _host_path(path: Path, kind: str) -> None:
    """A hostPath volume's node side, as the kubelet checks and creates it."""
    if kind == "DirectoryOrCreate":
        path.mkdir(mode=0o755, parents=True, exist_ok=True)
    elif kind == "FileOrCreate":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(exist_ok=True)
    elif kind == "Directory" and not path.is_dir():
        raise SystemExit(f"lab container: hostPath {path} is not a directory")
    elif kind == "File" and not path.is_file():
        raise SystemExit(f"lab container: hostPath {path} is not a file")


def _target(root: Path, target: str, is_file: bool) -> Path:
    where = root / target.lstrip("/")
    if is_file:
        where.parent.mkdir(parents=True, exist_ok=True)
        if not where.exists():
            where.touch()
    else:
        where.mkdir(parents=True, exist_ok=True)
    return where


def build_root(spec: dict[str, Any]) -> Path:
    root = Path(spec["root"])
    root.mkdir(parents=True, exist_ok=True)
    _mount("-t", "tmpfs", "-o", "mode=0755,size=16m", "tmpfs", str(root))
    for top in HOST_TREES:
        host = Path("/") / top
        if host.is_symlink():
            (root / top).symlink_to(os.readlink(host))
        elif host.is_dir():
            (root / top).mkdir()
            _bind(host, root / top, read_only=True)
    for name in ("proc", "dev", "sys", "run", "var", "tmp"):
        (root / name).mkdir()
    (root / "tmp").chmod(0o1777)
    (root / "var" / "run").symlink_to("../run")
    _mount("-t", "proc", "proc", str(root / "proc"))
    _mount("--rbind", "/dev", str(root / "dev"))
    _bind("/sys", root / "sys", read_only=True)
    _bind(spec["image"], _target(root, images.SOURCE_IN_CONTAINER, False), read_only=True)
    _bind(spec["venv"], _target(root, images.VENV_IN_CONTAINER, False), read_only=True)
    for mount in spec["mounts"]:
        if mount["host_path"] is not None:
            source = Path(mount["host_path"])
            _host_path(source, mount["host_type"])
        elif mount["empty_dir"] is not None:
            source = Path(spec["volumes"]) / mount["empty_dir"]
        else:
            source = Path(spec["service_account"])
        target = _target(root, mount["target"], source.is_file())
        _bind(source, target, mount["read_only"])
    if spec["read_only_root"]:
        _mount("-o", "remount,ro", str(root))
    return root


def main(argv: list[str]) -> None:
    if argv[:1] != ["--inside"]:
        # Into a mount namespace of our own first; the same pid carries on there.
        here = [sys.executable, "-m", "lab.kubelet.container", "--inside", *argv]
        os.execvp("unshare", ["unshare", "--mount", "--propagation", "slave", *here])
    spec = json.loads(Path(argv[1]).read_text())
    root = build_root(spec)
    privileges = []
    if spec["bounding_set"] is not None:
        privileges += ["--bounding-set", spec["bounding_set"]]
    if spec["no_new_privs"]:
        privileges.append("--no-new-privs")
    env = {**spec["env"], MARKER: spec["process"]}
    command = ["chroot", str(root), "/usr/bin/setpriv", *privileges, "--", *spec["argv"]]
    os.execvpe("chroot", command, env)


if __name__ == "__main__":
    main(sys.argv[1:])

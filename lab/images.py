"""The lab's Picket images: `localhost/picket:<tag>`, each a directory of the lab's.

A node of a real cluster runs the image built from daemonset/Containerfile and imported
on it (docs/deploy.md). The lab's nodes share the host's userland, so a lab image holds
only what the Containerfile adds to a Debian base: the `agent` package, the eBPF
programs' sources, the kernel-headers script and the entry point, laid out as the image
lays them out under /opt/picket/src; its Python dependencies are the lab's own virtual
environment, which the lab's container runtime mounts where the image has its own
(lab/kubelet/container.py). `picket lab up` imports the checkout it runs from as
`localhost/picket:<its version>`, the tag the DaemonSet names; `picket lab image` imports
a checkout under another tag (an upgrade drill's changed build)."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path

from agent import __version__

REPOSITORY = "localhost/picket"
# What of a checkout an image holds, and where: (path in the checkout, path in the image).
CONTENT = (
    ("agent", "agent"),
    ("bpf", "bpf"),
    ("scripts/kernel-headers.sh", "scripts/kernel-headers.sh"),
    ("daemonset/entrypoint.sh", "entrypoint.sh"),
)
# The image's `picket` command (the Containerfile's venv console script).
PICKET_COMMAND = '#!/bin/sh\nexec /opt/picket/venv/bin/python -m agent.cli "$@"\n'
# Where a container sees them (daemonset/Containerfile).
SOURCE_IN_CONTAINER = "/opt/picket/src"
VENV_IN_CONTAINER = "/opt/picket/venv"
ENTRYPOINT = [f"{SOURCE_IN_CONTAINER}/entrypoint.sh"]
CMD = ["--help"]
PATH = (
    f"{SOURCE_IN_CONTAINER}/bin:{VENV_IN_CONTAINER}/bin:"
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)
DIGEST_FILE = ".content-sha256"
ENV = {"PATH": PATH, "PYTHONPATH": SOURCE_IN_CONTAINER, "PYTHONDONTWRITEBYTECODE": "1"}


class ImageError(Exception):
    pass


def default_tag() -> str:
    return __version__


def images_dir(state: Path) -> Path:
    return state / "images" / "picket"


def is_picket(image: str) -> bool:
    return image.split("@", 1)[0].rpartition(":")[0] == REPOSITORY


def tag_of(image: str) -> str:
    return image.split("@", 1)[0].rpartition(":")[2]


def _digest(checkout: Path) -> str:
    """Of what an image of `checkout` would hold: its files' paths and contents."""
    digest = hashlib.sha256()
    for src, _ in CONTENT:
        path = checkout / src
        files = sorted(path.rglob("*")) if path.is_dir() else [path]
        for file in files:
            if file.is_file() and "__pycache__" not in file.parts:
                digest.update(str(file.relative_to(checkout)).encode() + b"\0")
                digest.update(file.read_bytes())
    return digest.hexdigest()


def build(state: Path, checkout: Path, tag: str) -> Path:
    """Import `checkout` as localhost/picket:`tag`; returns the image's directory.
    Unchanged content keeps the image as it is. A changed one goes to a new directory
    and the tag moves to it: containers running the old one keep their files, as a
    runtime's layers stay while a container uses them (old ones go at `lab down`)."""
    if not tag or "/" in tag or tag.startswith("."):
        raise ImageError(f"image tag {tag!r} is not a valid tag")
    missing = [src for src, _ in CONTENT if not (checkout / src).exists()]
    if missing:
        raise ImageError(f"{checkout} is not a Picket checkout (no {', '.join(missing)})")
    digest = _digest(checkout)
    link = images_dir(state) / tag
    if (link / DIGEST_FILE).exists() and (link / DIGEST_FILE).read_text() == digest:
        return link.resolve()
    link.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{tag}-", dir=link.parent))
    for src, dst in CONTENT:
        where = staging / dst
        where.parent.mkdir(parents=True, exist_ok=True)
        if (checkout / src).is_dir():
            shutil.copytree(checkout / src, where, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(checkout / src, where)
    command = staging / "bin" / "picket"
    command.parent.mkdir()
    command.write_text(PICKET_COMMAND)
    command.chmod(0o755)
    (staging / DIGEST_FILE).write_text(digest)
    staging.chmod(0o755)
    swap = link.with_name(f".{tag}.link")
    swap.unlink(missing_ok=True)
    swap.symlink_to(staging.name)
    swap.replace(link)  # atomic: a pod resolving the tag sees the old or the new image
    return staging


def resolve(state: Path, image: str) -> Path | None:
    """The directory of a Picket image the lab has, None if it has none of that tag
    (the pods' imagePullPolicy is Never: an image not imported is an error)."""
    if not is_picket(image):
        return None
    found = images_dir(state) / tag_of(image)
    return found.resolve() if (found / "agent").is_dir() else None

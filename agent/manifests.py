"""Reading manifests from disk: files or folders, YAML or JSON, multi-document, Lists.

Errors name the file (and document), then the object and field, so a user can go
straight to the line to fix."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from agent.model.errors import InvalidObjectError
from agent.model.parse import is_modelled, parse_object
from agent.model.state import ClusterState

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


class ManifestError(ValueError):
    """A file that cannot be read, or an object in it that fails validation."""


@dataclass(frozen=True)
class Document:
    source: str  # "path" or "path (document N)"
    obj: Any


def manifest_files(paths: list[str]) -> list[Path]:
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files += sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix in MANIFEST_SUFFIXES
            )
        elif path.is_file():
            files.append(path)
        else:
            raise ManifestError(f"{raw}: no such file or directory")
    return files


def read_documents(paths: list[str]) -> list[Document]:
    docs: list[Document] = []
    for path in manifest_files(paths):
        try:
            text = path.read_text()
            loaded = (
                (json.loads(text),) if path.suffix == ".json" else tuple(yaml.safe_load_all(text))
            )
        except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as exc:
            raise ManifestError(f"{path}: cannot read: {exc}") from None
        numbered = len(loaded) > 1
        for i, obj in enumerate(loaded):
            if obj is None:
                continue
            source = f"{path} (document {i + 1})" if numbered else str(path)
            docs += _flatten(obj, source)
    return docs


def _flatten(obj: Any, source: str) -> list[Document]:
    """A `List` (kubectl get -o yaml prints one) becomes its items."""
    if (
        isinstance(obj, dict)
        and str(obj.get("kind", "")).endswith("List")
        and isinstance(obj.get("items"), list)
    ):
        return [Document(f"{source} item {i}", item) for i, item in enumerate(obj["items"])]
    return [Document(source, obj)]


def load_state(
    paths: list[str], default_namespace: str = "default"
) -> tuple[ClusterState, list[str]]:
    """The cluster the manifests describe, and notes on documents that were ignored."""
    objects, ignored, seen = [], [], {}
    for doc in read_documents(paths):
        if not isinstance(doc.obj, dict):
            raise ManifestError(
                f"{doc.source}: a manifest must be an object, got {type(doc.obj).__name__}"
            )
        if not is_modelled(doc.obj):
            ignored.append(
                f"{doc.source}: {doc.obj.get('kind', '(no kind)')} has no effect on "
                "NetworkPolicy and is ignored"
            )
            continue
        try:
            obj = parse_object(doc.obj, default_namespace)
        except InvalidObjectError as exc:
            raise ManifestError(f"{doc.source}: {exc}") from None
        key = (type(obj).__name__, getattr(obj, "ref", getattr(obj, "name", "")))
        if key in seen:
            raise ManifestError(
                f"{doc.source}: {key[0]} {key[1]} is already defined in {seen[key]}"
            )
        seen[key] = doc.source
        objects.append(obj)
    return ClusterState.from_objects(objects), ignored

"""Describe any stitchkit file (store, map, head) as a plain dict, for `stitch info`."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from .errors import UsageError


def describe_store(path: str | Path) -> dict[str, Any]:
    from .store import EmbeddingStore

    with EmbeddingStore(path, allow_incomplete=True) as store:
        attrs = store.attrs
        out: dict[str, Any] = {
            "kind": "embedding store" if store.is_stitchkit else "embedding store (plain HDF5, provenance unknown)",
            "path": str(store.path),
            "samples": len(store),
            "dim": store.dim,
            "complete": store.complete,
        }
        for key in ("format_version", "modality", "model_spec", "weights_sha256", "shard", "input", "map", "source", "created"):
            if key in attrs:
                out[key] = attrs[key]
        if store.has_tokens:
            out["tokens"] = [len(store), *store.token_shape]
        labels = store.labels
        if labels is not None:
            out["labels"] = dict(Counter(str(v) for v in labels).most_common(20))
        groups = store.groups
        if groups is not None:
            out["groups"] = len(set(groups))
        for key in ("preprocessing", "versions"):
            if key in attrs:
                out[key] = json.loads(attrs[key])
        failed = store.failed
        out["failed"] = [f"{i}: {r}" for i, r in failed]
        return out


def describe_file(path: str | Path) -> dict[str, Any]:
    """Dispatch on the file's kind: HDF5 stores, or safetensors maps and heads."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{path}: no such file; check the path")
    if path.is_dir():
        raise UsageError(f"{path} is a folder: give a store (.h5), map or head file")
    with open(path, "rb") as fh:
        magic = fh.read(8)
    if magic.startswith(b"\x89HDF"):
        return describe_store(path)
    from .artifacts import describe_artifact

    return describe_artifact(path)

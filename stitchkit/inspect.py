"""Describe any stitchkit file (store, map, head, checkpoint, score file, export folder) as a
plain dict, for `stitch info`. Each kind is read by its own reader, which checks its format
version (``stitchkit.formats``)."""

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


def describe_export(path: str | Path) -> dict[str, Any]:
    from .export import read_export_info

    info = read_export_info(path)
    out: dict[str, Any] = {"kind": "clip-retrieval export folder" if info else
                           "clip-retrieval folder (no stitchkit.json, provenance unknown)", "path": str(path)}
    out.update(info)
    return out


def _is_score_csv(path: Path) -> bool:
    """Whether the first line is a score CSV's header (``id`` ... ``predicted``)."""
    import csv

    with open(path, "rb") as fh:
        first = fh.read(1 << 16).split(b"\n", 1)[0]
    try:
        header = next(csv.reader([first.decode("utf-8").rstrip("\r")]), [])
    except (UnicodeDecodeError, csv.Error):
        return False
    return {"id", "predicted"} <= set(header)


def describe_file(path: str | Path) -> dict[str, Any]:
    """Dispatch on the file's kind: HDF5 stores and score files, safetensors maps, heads and
    checkpoints, score CSVs, export folders."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{path}: no such file; check the path")
    if path.is_dir():
        from .export import is_export_folder

        if is_export_folder(path):
            return describe_export(path)
        raise UsageError(f"{path} is a folder: give a store (.h5), map, head or score file, or an export folder")
    with open(path, "rb") as fh:
        magic = fh.read(9)
    if magic.startswith(b"\x89HDF"):
        from .formats import SCORES_H5
        from .store import read_attr

        try:
            scores = read_attr(path, "format") == SCORES_H5.encoding_type
        except OSError:
            scores = False  # the store reader says what is wrong with it
        if scores:
            from .zeroshot.score_writer import describe_scores

            return describe_scores(path)
        return describe_store(path)
    if magic[8:9] != b"{" and _is_score_csv(path):
        from .zeroshot.score_writer import describe_scores

        return describe_scores(path)
    from .artifacts import describe_artifact

    return describe_artifact(path)

"""Name the kind of any file stitchkit writes (:func:`identify`, by content) and describe it as a
plain dict, for `stitch info`. Stores, maps, heads, checkpoints, score files and export folders
are read by their own readers, which check their format version (``stitchkit.formats``)."""

from __future__ import annotations

import json
import os
import struct
from collections import Counter
from pathlib import Path
from typing import Any

from . import formats as F
from .errors import FormatError, UsageError
from .formats import Identified


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
            for key in ("token_grid", "model_token_grid"):  # --token-grid: pooled onto, from
                if key in attrs:
                    out[key] = attrs[key]
        labels = store.labels
        if labels is not None:
            out["labels"] = dict(Counter(str(v) for v in labels).most_common(20))
        groups = store.groups
        if groups is not None:
            out["groups"] = len(set(groups))
        for key in ("preprocessing", "versions", "code"):
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


def identify(path: str | os.PathLike) -> Identified | None:
    """The kind and version of any file or folder stitchkit writes, by its content (never its
    name); None for anything else. A stitchkit file of a version this one does not read raises
    :class:`FormatError` in one line."""
    p = Path(path)
    if p.is_dir():
        return _identify_folder(p)
    with open(p, "rb") as fh:
        head = fh.read(1 << 16)
    if head.startswith(b"\x89HDF"):
        return _identify_hdf5(p)
    if len(head) >= 9 and head[8:9] == b"{":  # safetensors: u64 header length, then JSON
        return _identify_artifact(p)
    if head.startswith(b"\x89PNG"):
        return Identified(F.FIGURE, 1)
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return _identify_text(p, text, complete=len(head) < 1 << 16)


def _identify_folder(p: Path) -> Identified | None:
    from .export import is_export_folder, read_export_info

    if is_export_folder(p):
        return Identified(F.EXPORT, F.check_format(p, F.EXPORT, read_export_info(p).get("format_version")))
    if any(p.glob("part-*.h5")):
        return Identified(F.PARTS, 1)
    return None


def _identify_hdf5(p: Path) -> Identified | None:
    from .store import read_hdf5_header

    try:
        header = read_hdf5_header(p)
    except OSError:
        return None
    if header.format == F.SCORES_H5.encoding_type:
        return Identified(F.SCORES_H5, F.check_format(p, F.SCORES_H5, header.format_version))
    if header.has_embeddings:
        return Identified(F.STORE, F.check_format(p, F.STORE, header.format_version))
    return None


def _identify_artifact(p: Path) -> Identified | None:
    from .artifacts import read_header

    try:
        header = read_header(p)
    except FormatError:
        raise
    except (UsageError, ValueError, OSError):
        return None
    fmt = F.artifact_format(p, header.get("kind"))
    return Identified(fmt, F.check_format(p, fmt, header.get("format_version")))


def _identify_text(p: Path, text: str, complete: bool) -> Identified | None:
    first = text.lstrip()[:1]
    if first in ("{", "["):
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _identify_json_lines(text, complete)
        return _identify_json(p, data)
    lower = text.lstrip().lower()
    if lower.startswith(("<!doctype html", "<html")):
        return Identified(F.PAGE, 1)
    lines = [line for line in text.splitlines() if line.strip()]
    content = [line for line in lines if not line.lstrip().startswith("#")]
    if not content:
        return None
    header = _csv_header(content[0])
    if {"method", "n_anchors"} <= header:
        return Identified(F.SWEEP_TABLE, 1)
    if {"id", "predicted"} <= header:
        return Identified(F.SCORES_CSV, 1)  # its version is in NAME.csv-metadata.json: the reader checks it
    if "id" in header and header & {"path", "text", "image", "report"}:
        return Identified(F.MANIFEST, 1)
    if any(line.startswith("datasets:") for line in content):
        return Identified(F.SUITE, 1)
    if all(len(line.split()) == 1 and "," not in line for line in content):
        return Identified(F.ID_FILE, 1)
    if lines[0].startswith(("# ", "|")):
        return Identified(F.MARKDOWN, 1)
    return None


def _csv_header(line: str) -> set[str]:
    import csv

    try:
        return {c.strip() for c in next(csv.reader([line]), [])}
    except csv.Error:
        return set()


def _identify_json_lines(text: str, complete: bool) -> Identified | None:
    lines = text.splitlines() if complete else text.splitlines()[:-1]  # a line cut at 64 KiB is not read
    try:
        rows = [json.loads(line) for line in lines if line.strip()]
    except json.JSONDecodeError:
        return None
    if rows and all(isinstance(r, dict) and "id" in r for r in rows):
        return Identified(F.MANIFEST, 1)
    return None


def _versioned(p: Path, schema: str) -> Identified | None:
    kind, _, version = schema.rpartition("/")
    fmt = F.SCHEMAS.get(kind)
    return None if fmt is None else Identified(fmt, F.check_format(p, fmt, version or None))


def _identify_json(p: Path, data: object) -> Identified | None:
    if isinstance(data, dict):
        if data.get("format") == F.SCORES_CSV.encoding_type:
            return Identified(F.SCORES_CSV_METADATA, F.check_format(p, F.SCORES_CSV, data.get("format_version")))
        from .results import guess_kind

        if isinstance(data.get("schema"), str):
            return _versioned(p, data["schema"])
        if "id" in data and data.keys() & {"path", "text", "image", "report"}:
            return Identified(F.MANIFEST, 1)  # a JSON-lines manifest of one row

        return Identified(F.COMMAND_OUTPUT, 1) if guess_kind(data) else None
    if isinstance(data, list) and data and all(isinstance(r, dict) for r in data):
        from .results import guess_kind

        if all(guess_kind(r) for r in data):  # records, or what `--json` printed before records
            versions = [_versioned(p, r["schema"]) for r in data if isinstance(r.get("schema"), str)]
            return Identified(F.RECORDS, max((v.version for v in versions if v), default=1))
    return None


def describe_file(path: str | Path) -> dict[str, Any]:
    """What any file or folder stitchkit writes holds, by its kind (:func:`stitchkit.formats.identify`):
    stores, maps, heads, checkpoints, score files and export folders by their own readers; result
    records, tables, manifests, id files, suites, figures and pages by a summary."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{path}: no such file; check the path")
    found = identify(path)
    if found is None:
        if path.is_dir():
            raise UsageError(f"{path} is a folder: give a store (.h5), map, head or score file, or an export folder")
        with open(path, "rb") as fh:
            magic = fh.read(9)
        if magic.startswith(b"\x89HDF"):
            return describe_store(path)  # its reader says what is wrong with it (truncated, no embeddings)
        if magic[8:9] == b"{":
            from .artifacts import describe_artifact

            return describe_artifact(path)  # likewise: a damaged safetensors header
        raise UsageError(f"{path}: not a stitchkit file: give a store, map, head, score file, result record, "
                         "manifest, id file, suite, figure or export folder")
    fmt = found.format
    if fmt is F.STORE:
        out = describe_store(path)
    elif fmt is F.EXPORT:
        out = describe_export(path)
    elif fmt in (F.SCORES_H5, F.SCORES_CSV):
        from .zeroshot.score_writer import describe_scores

        out = describe_scores(path)
    elif fmt in F.ARTIFACTS.values():
        from .artifacts import describe_artifact

        out = describe_artifact(path)
    else:
        out = {"kind": fmt.name, "path": str(path), **_summary(path, found)}
    if fmt in _WRITES_CODE:
        out["code"] = out.get("code")  # None: written before stitchkit recorded it
    return {"kind": out.pop("kind"), "format": fmt.encoding_type,
            "format_version": out.pop("format_version", found.version), **out}


# The kinds that name the code that wrote them (``code``: :mod:`stitchkit.provenance`).
_WRITES_CODE = (F.STORE, F.EXPORT, F.SCORES_H5, F.SCORES_CSV, F.SCORES_CSV_METADATA, F.RECORD,
                *F.ARTIFACTS.values())


def _record_code(record: dict[str, Any]) -> dict[str, Any] | None:
    prov = record.get("provenance") or {}
    return {k: prov[k] for k in ("stitchkit", "commit", "dirty") if k in prov} or None


def _summary(path: Path, found: Identified) -> dict[str, Any]:
    """A few facts about a file of a kind with no reader of its own."""
    fmt = found.format
    if fmt in (F.RECORD, F.RECORDS, F.COMMAND_OUTPUT, F.BENCHMARK, F.LEARNING_CURVE, F.EXPLAIN,
               F.SCORES_CSV_METADATA):
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, list):
            from .provenance import describe_code

            codes = Counter(describe_code(_record_code(r)) for r in data)
            return {"records": len(data), "tasks": dict(Counter(str(r.get("task")) for r in data)),
                    "codes": dict(codes)}
        keys = ("task", "dataset", "model", "table", "classes", "name", "routes")
        out = {k: data[k] for k in keys if k in data} | {"keys": len(data)}
        if fmt in (F.RECORD, F.SCORES_CSV_METADATA):
            out["code"] = _record_code(data) if fmt is F.RECORD else data.get("code")
        return out
    if fmt in (F.SWEEP_TABLE, F.MANIFEST):
        import csv

        with open(path, newline="", encoding="utf-8") as fh:
            if path.read_bytes()[:1] == b"{":  # JSON lines
                rows = [json.loads(line) for line in fh if line.strip()]
                return {"rows": len(rows), "columns": sorted({k for r in rows for k in r})}
            reader = csv.reader(fh)
            header = next(reader, [])
            return {"rows": sum(1 for _ in reader), "columns": header}
    if fmt is F.ID_FILE:
        from .fileio import id_file_fields, read_id_file

        return {"ids": len(read_id_file(path)), **id_file_fields(path)}
    if fmt is F.PARTS:
        return {"parts": len(list(path.glob("part-*.h5")))}
    if fmt is F.FIGURE:
        width, height = struct.unpack(">II", path.read_bytes()[16:24])  # the PNG's IHDR chunk
        return {"pixels": f"{width}x{height}", "bytes": path.stat().st_size}
    if fmt is F.SUITE:
        import yaml

        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        return {"name": data.get("name"), "datasets": [d.get("name") for d in data.get("datasets") or []]}
    return {"bytes": path.stat().st_size}

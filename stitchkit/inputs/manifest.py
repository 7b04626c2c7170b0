"""A CSV or JSONL manifest: one row per sample, images by a path column or texts by a text column.

Columns (renamed by the ``--*-column`` flags): ``id`` (else the path, or the row number for
texts), ``path`` (relative to the manifest, or to ``--root``, which paths may not leave),
``text``, ``label``, ``group``; every further column (a dataset spec's ``view``, ``study``, ``split``,
``uncertain`` as `stitch datasets SPEC -o` writes them, Kermany's ``subtype``) is kept and becomes a
store column of the same name (but for the names a store uses itself: ``EXTRA_RESERVED``).
``--where COL=VALUE`` keeps matching rows. Paths are made
absolute by `fileio.absolute` (symbolic links kept), so they read back as they were written.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from ..errors import UsageError
from ..fileio import absolute
from .registry import InputFormat
from .types import Columns, InputOptions, Inputs, Item

SUFFIXES = (".csv", ".jsonl")
#: Store datasets a further manifest column may not become (it is left out).
EXTRA_RESERVED = ("embeddings", "ids", "labels", "texts", "groups", "tokens", "tokens_mask", "failed")


def _rows(path: Path) -> list[dict[str, str]]:
    try:
        if path.suffix.lower() == ".csv":
            with open(path, newline="", encoding="utf-8") as fh:
                return [dict(row) for row in csv.DictReader(fh)]
        rows = []
        with open(path, encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if line.strip():
                    row = json.loads(line)
                    if not isinstance(row, dict):
                        raise UsageError(f"{path} line {n}: each JSONL line must be an object")
                    rows.append({k: "" if v is None else str(v) for k, v in row.items()})
        return rows
    except (UnicodeDecodeError, csv.Error, json.JSONDecodeError) as exc:
        raise UsageError(f"manifest {path} cannot be parsed ({exc}): check its format") from exc


def read_manifest(path: Path, cols: Columns, root: Path | None, where: dict[str, str]) -> Inputs:
    rows = _rows(path)
    header = set(rows[0]) if rows else set()
    for key in where:
        if key not in header:
            raise UsageError(f"--where column {key!r} is not in {path} (columns: {sorted(header)})")
    rows = [r for r in rows if all((r.get(k) or "") == v for k, v in where.items())]
    if cols.path in header:
        modality = "image"
    elif cols.text in header:
        modality = "text"
    else:
        raise UsageError(
            f"manifest {path} has neither a '{cols.path}' nor a '{cols.text}' column: "
            "rename with --path-column / --text-column"
        )
    base = absolute(root or path.parent)
    named = {cols.id, cols.path, cols.text, cols.label, cols.group}
    extras = [c for c in (list(rows[0]) if rows else []) if c and c not in named and c not in EXTRA_RESERVED]
    items = []
    for n, row in enumerate(rows):
        item = Item(id=(row.get(cols.id) or "").strip())
        if modality == "image":
            rel = (row.get(cols.path) or "").strip()
            item.path = _confined(base, rel, root is not None)
            item.id = item.id or rel
        else:
            item.text = row.get(cols.text) or ""
            item.id = item.id or str(n)
        item.label = row.get(cols.label) if cols.label in header else None
        item.group = row.get(cols.group) if cols.group in header else None
        if modality == "image" and cols.text in header:
            item.text = row.get(cols.text) or ""
        item.extra = {c: row.get(c) or "" for c in extras}
        items.append(item)
    present = [c for c, name in (("label", cols.label), ("group", cols.group), ("text", cols.text)) if name in header]
    return Inputs(items, modality, str(path), present + extras, kind="manifest")


def _confined(base: Path, rel: str, strict: bool) -> Path:
    """A manifest path made absolute (links kept); with --root it may not point outside the
    root, by ``..`` or through a link (both sides resolved for the check alone)."""
    if "\x00" in rel:
        raise UsageError(f"manifest path {rel!r} holds a NUL character: fix the manifest")
    target = absolute(base / rel)
    if strict and not target.resolve().is_relative_to(base.resolve()):
        raise UsageError(f"manifest path {rel!r} escapes --root {base}: fix the manifest")
    return target


def _claim(sources: list[str]) -> bool:
    path = Path(sources[0])
    return len(sources) == 1 and path.suffix.lower() in SUFFIXES and path.exists() and not path.is_dir()


def _read(sources: list[str], options: InputOptions) -> Inputs:
    return read_manifest(Path(sources[0]), options.columns, options.root, options.where)


FORMAT = InputFormat(
    "manifest", "a .csv or .jsonl manifest: a path column (images) or a text column, with id, label, group",
    "a .csv/.jsonl manifest", claim=_claim, read=_read, options=("columns", "root", "where"),
    ray=True, labels=True, groups=True, texts=True,
)

"""What `stitch embed` reads: an image folder (DICOM included), a CSV/JSONL manifest, a text
file, WebDataset tar shards, or a local Hugging Face dataset (see `webdataset` and `hf`)."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

from ..errors import UsageError
from .dicom import has_preamble, parse_tags, read_tags
from .grey import DEFAULT_GREY_RANGE, check_grey_range
from .pixels import DICOM_SUFFIXES
from .types import Columns, Inputs, Item

__all__ = ["IMAGE_SUFFIXES", "Columns", "Inputs", "Item", "read_inputs"]

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp", ".dcm", ".dicom"}


def read_inputs(
    source: str | Path | Sequence[str | Path],
    *,
    columns: Columns = Columns(),
    root: str | Path | None = None,
    where: dict[str, str] | None = None,
    label_from: str | None = None,
    dicom_tags: str | Sequence[str] | None = None,
    grey_range: str = DEFAULT_GREY_RANGE,
) -> Inputs:
    """Read the input list; ``root`` confines manifest paths to one folder.

    ``source`` is a folder, a manifest, a .txt file, one or more .tar shards (a list, or a
    brace pattern such as ``shards/{00000..00099}.tar``), a Hugging Face ``save_to_disk``
    folder or .parquet files. ``label_from`` picks a WebDataset label (cls, txt, json:FIELD);
    ``dicom_tags`` copies allowed DICOM header tags into columns (see `dicom.TAG_COLUMNS`);
    ``grey_range`` (image | stored) travels on each item to the decoder (see `grey`).
    """
    from . import hf, webdataset

    check_grey_range(grey_range)
    tags = parse_tags(dicom_tags) if isinstance(dicom_tags, str) or dicom_tags is None \
        else parse_tags(",".join(dicom_tags))
    sources = [source] if isinstance(source, (str, Path)) else list(source)
    if not sources:
        raise UsageError("no input given: name an image folder, a manifest, a .txt file or .tar shards")
    tars = webdataset.expand_sources(sources)
    if label_from and tars is None:
        raise UsageError("--label-from applies to WebDataset .tar shards only")
    if tars is not None:
        inputs = webdataset.read_shards(tars, label_from=label_from)
        src = Path(str(sources[0]))
    elif len(sources) > 1:
        raise UsageError(f"{len(sources)} inputs given: several inputs must all be .tar shards")
    else:
        src = Path(sources[0])
        if not src.exists():
            raise UsageError(f"input {src} does not exist: give an image folder, a .csv/.jsonl manifest, "
                             "a .txt file, .tar shards or a Hugging Face dataset")
        if src.is_dir() and ((src / "img_emb").is_dir() or (src / "text_emb").is_dir()):
            raise UsageError(f"{src} holds embeddings (clip-retrieval's layout), not inputs: "
                             f"`stitch import {src} -o STORE.h5` makes it a store")
        if hf.is_dataset(src):
            inputs = hf.read_dataset(src, columns)
        elif src.is_dir():
            inputs = _read_folder(src)
        elif src.suffix.lower() in (".csv", ".jsonl"):
            inputs = _read_manifest(src, columns, Path(root) if root else None, where or {})
        elif src.suffix.lower() == ".txt":
            inputs = _read_lines(src)
        else:
            raise UsageError(f"input {src}: unknown kind '{src.suffix}': use a folder, .csv, .jsonl, .txt, "
                             ".tar or .parquet")
    if not inputs.items:
        raise UsageError(f"input {src} holds no samples: check the file, folder or --where filter")
    for n, it in enumerate(inputs.items, 1):
        # HDF5 strings cannot hold NUL: refuse now, not when the store is written at the end.
        for name in ("id", "text", "label", "group"):
            if "\x00" in (getattr(it, name) or ""):
                raise UsageError(f"input {src} sample {n}: its {name} holds a NUL character: fix the input")
    seen: set[str] = set()
    dupes = [it.id for it in inputs.items if it.id in seen or seen.add(it.id)]
    if dupes:
        raise UsageError(f"input {src}: {len(dupes)} duplicate ids (e.g. {dupes[:3]}): ids must be unique")
    if tags:
        _add_dicom_tags(inputs, tags)
    inputs.grey_range = grey_range
    if grey_range != DEFAULT_GREY_RANGE:
        for it in inputs.items:
            it.grey_range = grey_range
    return inputs


def _add_dicom_tags(inputs: Inputs, tags: tuple[str, ...]) -> None:
    """Copy the chosen header tags of DICOM samples into columns ("" for other samples)."""
    from .dicom import TAG_COLUMNS
    from .webdataset import read_member

    names = [TAG_COLUMNS[t] for t in tags]
    if "group" in names and "group" in inputs.columns:
        raise UsageError("--dicom-tags StudyInstanceUID fills the group column, but the manifest has one: "
                         "drop one of them")
    for item in inputs.items:
        values: dict[str, str] = {}
        if item.error is None and item.container is None and item.path is not None and _is_dicom(item.path):
            values = read_tags(item.path, tags)
        elif item.container == "tar" and (item.member or "").lower().endswith(tuple(DICOM_SUFFIXES)):
            try:
                values = read_tags(read_member(item, limit=1 << 20), tags)
            except Exception:  # noqa: BLE001 - a bad member fails later, with its reason
                values = {}
        for name in names:
            if name == "group":
                item.group = values.get(name, "")
            else:
                item.extra[name] = values.get(name, "")
    inputs.columns = [*inputs.columns, *(n for n in names if n not in inputs.columns)]


def _is_dicom(path: Path) -> bool:
    return path.suffix.lower() in DICOM_SUFFIXES or (path.is_file() and has_preamble(path))


def _read_folder(folder: Path) -> Inputs:
    # Files without an extension are taken when they carry the DICM preamble (PACS exports).
    files = sorted(p for p in folder.rglob("*") if p.is_file() and (
        p.suffix.lower() in IMAGE_SUFFIXES or (not p.suffix and has_preamble(p))))
    items = []
    for path in files:
        rel = path.relative_to(folder)
        # A label comes from the first sub-folder (folder/NORMAL/x.png -> NORMAL).
        label = rel.parts[0] if len(rel.parts) > 1 else None
        items.append(Item(rel.as_posix(), path=path, label=label))
    cols = ["label"] if all(it.label for it in items) and items else []
    if not cols:
        for it in items:
            it.label = None
    return Inputs(items, "image", str(folder), cols, kind="files")


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


def _read_manifest(path: Path, cols: Columns, root: Path | None, where: dict[str, str]) -> Inputs:
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
    base = (root or path.parent).resolve()
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
        items.append(item)
    present = [c for c, name in (("label", cols.label), ("group", cols.group), ("text", cols.text)) if name in header]
    return Inputs(items, modality, str(path), present, kind="manifest")


def _confined(base: Path, rel: str, strict: bool) -> Path:
    """Resolve a manifest path; with --root it may not point outside the root."""
    if "\x00" in rel:
        raise UsageError(f"manifest path {rel!r} holds a NUL character: fix the manifest")
    target = (base / rel).resolve()
    if strict and not target.is_relative_to(base):
        raise UsageError(f"manifest path {rel!r} escapes --root {base}: fix the manifest")
    return target


def _read_lines(path: Path) -> Inputs:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path} is not UTF-8 text: one text per line is expected") from exc
    items = [Item(str(n), text=line) for n, line in enumerate(lines, 1) if line.strip()]
    return Inputs(items, "text", str(path), ["text"], kind="lines")

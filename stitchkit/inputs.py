"""What `stitch embed` reads: an image folder, a CSV/JSONL manifest, or a text file."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from .errors import InputFailure, UsageError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp"}


@dataclass(frozen=True)
class Columns:
    """Manifest column names; each can be renamed on the command line."""

    id: str = "id"
    path: str = "path"
    text: str = "text"
    label: str = "label"
    group: str = "group"


@dataclass
class Item:
    id: str
    path: Path | None = None
    text: str | None = None
    label: str | None = None
    group: str | None = None


@dataclass
class Inputs:
    items: list[Item]
    modality: str  # "image" | "text"
    source: str
    columns: list[str] = field(default_factory=list)  # optional columns present: label, group, text


def read_inputs(
    source: str | Path,
    *,
    columns: Columns = Columns(),
    root: str | Path | None = None,
    where: dict[str, str] | None = None,
) -> Inputs:
    """Read the input list; ``root`` confines manifest paths to one folder."""
    src = Path(source)
    if not src.exists():
        raise UsageError(f"input {src} does not exist: give an image folder, a .csv/.jsonl manifest or a .txt file")
    if src.is_dir():
        inputs = _read_folder(src)
    elif src.suffix.lower() in (".csv", ".jsonl"):
        inputs = _read_manifest(src, columns, Path(root) if root else None, where or {})
    elif src.suffix.lower() == ".txt":
        inputs = _read_lines(src)
    else:
        raise UsageError(f"input {src}: unknown kind '{src.suffix}': use a folder, .csv, .jsonl or .txt")
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
    return inputs


def _read_folder(folder: Path) -> Inputs:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
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
    return Inputs(items, "image", str(folder), cols)


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
    return Inputs(items, modality, str(path), present)


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
    return Inputs(items, "text", str(path), ["text"])


def load_image(path: Path) -> Image.Image:
    """Decode one image fully, or raise InputFailure with a reason a person can act on."""
    if not path.is_file():
        raise InputFailure("file not found" if not path.exists() else "not a regular file")
    if path.stat().st_size == 0:
        raise InputFailure("empty file (0 bytes)")
    try:
        image = Image.open(path)
        image.load()
    except UnidentifiedImageError:
        raise InputFailure("not an image (format not recognised)") from None
    except Image.DecompressionBombError as exc:
        raise InputFailure(f"image too large ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputFailure(f"corrupt or truncated image ({exc})") from None
    return image

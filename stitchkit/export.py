"""Stores to and from clip-retrieval's embedding folder, which autofaiss indexes unchanged.

The layout (clip-retrieval's ``clip_inference`` output)::

    DIR/img_emb/img_emb_0.npy         (n0, D) float32 (or float16), rows in store order
    DIR/img_emb/img_emb_1.npy         ... one file per chunk of ``chunk_size`` rows
    DIR/metadata/metadata_0.parquet   the same rows: id, then the store's string columns
    DIR/stitchkit.json                provenance: format, format_version, model, weights, dim,
                                      modality, chunks, code (stitchkit.provenance)

Text stores write ``text_emb/text_emb_i.npy``. The metadata columns are ``id``, ``label``,
``group``, ``caption`` (the texts; clip-retrieval's name for them) and any further string
column by its own name (``view_position``, ``patient_id``). ``stitchkit.json`` is ignored by
clip-retrieval and autofaiss and lets `import_folder` give the store back its provenance;
its ``format`` and ``format_version`` are the folder's encoding type and version
(``stitchkit.formats.EXPORT``), which :func:`read_export_info` checks.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .errors import StoreError, UsageError
from .fileio import check_writable_dir, publish, temporary_dir
from .formats import EXPORT, check_format
from .provenance import code_provenance
from .settings import Range, check_settings, setting
from .store import EmbeddingStore, write_store
from .store import format as fmt

EXPORT_FORMAT = EXPORT.encoding_type
INFO_FILE = "stitchkit.json"
# store dataset -> metadata column; clip-retrieval calls texts "caption".
_RENAME = {fmt.LABELS: "label", fmt.GROUPS: "group", fmt.TEXTS: "caption"}
_PROVENANCE = ("model_spec", "weights_sha256", "preprocessing", "input", "modality", "pixel_mapping",
               "shard", "map", "source")


def _parquet() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise UsageError("export and import write Parquet metadata and need pyarrow: "
                         "pip install 'stitchkit[parquet]'") from None
    return pyarrow


def _string_columns(store: EmbeddingStore) -> list[str]:
    """The store's per-row string datasets beyond ids: the named columns in clip-retrieval's
    order (label, group, caption), then the extras by name."""
    return sorted(store.string_columns,
                  key=lambda c: (c not in _RENAME, list(_RENAME).index(c) if c in _RENAME else 0, c))


@dataclass(frozen=True)
class ExportOptions:
    """How :func:`export_store` writes the folder."""

    chunk_size: int = setting(1_000_000, "Rows per img_emb_N.npy / metadata_N.parquet pair.", within=Range(1))
    dtype: str = setting("float32", "float16 halves the size, as clip-retrieval writes.",
                         choices=("float32", "float16"))
    overwrite: bool = setting(False, "Replace a non-empty output folder.")

    def __post_init__(self) -> None:
        check_settings(self)


def export_store(store_path: str | os.PathLike, out_dir: str | os.PathLike, options: ExportOptions | None = None,
                 **settings: Any) -> dict[str, Any]:
    """Write ``store_path`` as a clip-retrieval folder at ``out_dir``; returns a summary.

    The folder appears whole or not at all: it is built beside ``out_dir`` and renamed.
    """
    options = replace(options or ExportOptions(), **settings)
    chunk_size, dtype, overwrite = options.chunk_size, options.dtype, options.overwrite
    pa = _parquet()
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise UsageError(f"{out} already exists and is not empty: pass --overwrite or choose another -o")
    check_writable_dir(out)
    store = EmbeddingStore(store_path)
    with store:
        modality = store.modality or "image"
        prefix = "text_emb" if modality == "text" else "img_emb"
        columns = _string_columns(store)
        n, dim = len(store), store.dim
        ids = store.ids
        values = {c: store.column(c) for c in columns}
        # Built beside ``out`` (a run killed mid-way leaves it for the next export to remove).
        tmp = temporary_dir(out.parent, f".{out.name}.")
        try:
            (tmp / prefix).mkdir()
            (tmp / "metadata").mkdir()
            chunks = []
            for i, a in enumerate(range(0, max(n, 1), chunk_size)):
                b = min(a + chunk_size, n)
                np.save(tmp / prefix / f"{prefix}_{i}.npy", store.embeddings[a:b].astype(dtype))
                table = pa.table({"id": pa.array(ids[a:b].tolist(), pa.string()),
                                  **{_RENAME.get(c, c): pa.array(values[c][a:b].tolist(), pa.string())
                                     for c in columns}})
                pa.parquet.write_table(table, tmp / "metadata" / f"metadata_{i}.parquet")
                chunks.append(b - a)
            info = {
                "format": EXPORT_FORMAT, "format_version": EXPORT.version, "dim": dim, "rows": n,
                "dtype": dtype, "chunks": chunks, "embeddings": prefix,
                "columns": ["id", *(_RENAME.get(c, c) for c in columns)],
                "store": {k: store.attrs.get(k) for k in _PROVENANCE if store.attrs.get(k) not in (None, "")},
                "failed": len(store.failed), "code": code_provenance(),
            }
            (tmp / INFO_FILE).write_text(json.dumps(info, indent=1, default=str))
            if out.exists():
                shutil.rmtree(out)
            publish(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return {"path": str(out), "rows": n, "dim": dim, "chunks": len(chunks), "embeddings": prefix,
            "columns": info["columns"]}


def is_export_folder(path: str | os.PathLike) -> bool:
    p = Path(path)
    return p.is_dir() and ((p / "img_emb").is_dir() or (p / "text_emb").is_dir())


def read_export_info(folder: str | os.PathLike) -> dict[str, Any]:
    """The folder's ``stitchkit.json`` ({} for a plain clip-retrieval folder), its format
    version checked: one this stitchkit does not read is refused in one line."""
    src = Path(folder)
    if not (src / INFO_FILE).is_file():
        return {}
    try:
        info = json.loads((src / INFO_FILE).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{src}/{INFO_FILE} cannot be parsed ({exc})") from None
    if not isinstance(info, dict):
        raise UsageError(f"{src}/{INFO_FILE} is not a JSON object: not a stitchkit export")
    if info.get("format") == EXPORT_FORMAT:  # another tool's stitchkit.json carries no version of ours
        check_format(src, EXPORT, info.get("format_version"))
    return info


def _numbered(folder: Path, prefix: str, suffix: str) -> list[Path]:
    pattern = re.compile(rf"{re.escape(prefix)}_(\d+){re.escape(suffix)}")
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := pattern.fullmatch(p.name))]
    return [p for _, p in sorted(found)]


def import_folder(folder: str | os.PathLike, out: str | os.PathLike, *, overwrite: bool = False) -> dict[str, Any]:
    """Read a clip-retrieval folder (ours or clip-retrieval's own) into an HDF5 store at ``out``."""
    pa = _parquet()
    src, out = Path(folder), Path(out)
    if not is_export_folder(src):
        raise UsageError(f"{src} is not a clip-retrieval folder: it needs img_emb/ or text_emb/")
    if out.exists() and not overwrite:
        raise UsageError(f"{out} already exists: pass --overwrite or choose another -o")
    check_writable_dir(out)
    if (src / "img_emb").is_dir() and (src / "text_emb").is_dir():
        raise UsageError(f"{src} holds both img_emb/ and text_emb/: import a copy with one of them")
    prefix = "img_emb" if (src / "img_emb").is_dir() else "text_emb"
    npys = _numbered(src / prefix, prefix, ".npy")
    if not npys:
        raise UsageError(f"{src / prefix} holds no {prefix}_N.npy files")
    metas = _numbered(src / "metadata", "metadata", ".parquet") if (src / "metadata").is_dir() else []
    if metas and len(metas) != len(npys):
        raise UsageError(f"{src}: {len(npys)} embedding files but {len(metas)} metadata files: they must pair up")
    info = read_export_info(src)
    arrays, tables = [], []
    for i, npy in enumerate(npys):
        try:
            arr = np.load(npy, allow_pickle=False, mmap_mode="r")
        except (ValueError, OSError) as exc:
            raise StoreError(f"{npy} is not a readable .npy array ({exc})") from None
        if arr.ndim != 2 or (arrays and arr.shape[1] != arrays[0].shape[1]):
            raise StoreError(f"{npy} has shape {arr.shape}: every chunk must be (rows, {arrays[0].shape[1] if arrays else 'D'})")
        arrays.append(arr)
        if metas:
            table = pa.parquet.read_table(metas[i])
            if table.num_rows != arr.shape[0]:
                raise StoreError(f"{metas[i].name} has {table.num_rows} rows but {npy.name} has {arr.shape[0]}")
            tables.append(table)
    embeddings = np.concatenate([np.asarray(a, dtype=np.float32) for a in arrays])
    if not np.isfinite(embeddings).all():
        raise StoreError(f"{src} holds NaN or Inf embeddings: fix them before importing")
    meta = pa.concat_tables(tables, promote_options="default") if tables else None
    names = meta.column_names if meta is not None else []
    key = next((k for k in ("id", "key", "image_path", "url") if k in names), None)
    ids = [str(v) for v in meta.column(key).to_pylist()] if key else [str(i) for i in range(len(embeddings))]
    if len(set(ids)) != len(ids):
        raise UsageError(f"{src}: the {key!r} column repeats ids; ids must be unique")
    back = {v: k for k, v in _RENAME.items()}
    columns = {}
    for name in names:
        if name == key or not (pa.types.is_string(meta.schema.field(name).type)
                               or pa.types.is_large_string(meta.schema.field(name).type)):
            continue
        columns[back.get(name, name)] = ["" if v is None else v for v in meta.column(name).to_pylist()]
    provenance = {k: v for k, v in (info.get("store") or {}).items() if k in _PROVENANCE}
    provenance.setdefault("modality", "text" if prefix == "text_emb" else "image")
    provenance["input"] = provenance.get("input") or str(src)
    write_store(out, ids, embeddings, attrs=provenance, columns=columns)
    return {"path": str(out), "rows": len(ids), "dim": int(embeddings.shape[1]), "columns": sorted(columns),
            "provenance": "stitchkit.json" if info else "none (plain clip-retrieval folder)"}

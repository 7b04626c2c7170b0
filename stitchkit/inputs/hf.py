"""Local Hugging Face datasets as input, read with pyarrow alone (no `datasets` needed).

Two layouts: a ``save_to_disk`` folder (``state.json`` + ``dataset_info.json`` + Arrow stream
files) and Parquet files (a ``.parquet`` file, or a folder holding only Parquet files). The
image column is a ``datasets.Image`` feature (a struct of ``bytes`` and ``path``), found by
``--image-column`` or by its feature type; a ``ClassLabel`` label column gives its names. Ids
come from the id column when there is one, else the row number. Only ids, labels and texts are
read while listing; a DataLoader worker reads an image cell by its row (Arrow files are
memory-mapped; Parquet row groups are read one at a time and kept while the worker needs them).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import InputFailure, UsageError
from .registry import InputFormat
from .types import Columns, InputOptions, Inputs, Item


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.ipc  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise UsageError("reading Hugging Face datasets and Parquet needs pyarrow: "
                         "pip install 'stitchkit[parquet]'") from None
    return pyarrow


def is_dataset(src: Path) -> bool:
    if src.is_file():
        return src.suffix.lower() == ".parquet"
    if not src.is_dir():
        return False
    if (src / "dataset_dict.json").is_file() or (src / "state.json").is_file():
        return True
    files = [p for p in src.iterdir() if p.is_file() and not p.name.startswith(".")]
    return bool(files) and all(p.suffix.lower() == ".parquet" for p in files)


def _files(src: Path) -> tuple[list[Path], str, dict[str, Any]]:
    """(data files, "arrow" | "parquet", features) of a dataset folder or Parquet file."""
    if src.is_dir() and (src / "dataset_dict.json").is_file():
        splits = json.loads((src / "dataset_dict.json").read_text()).get("splits", [])
        raise UsageError(f"{src} holds several splits ({', '.join(splits)}): name one, e.g. {src / splits[0]}"
                         if splits else f"{src} is a DatasetDict with no splits")
    if src.is_dir() and (src / "state.json").is_file():
        try:
            state = json.loads((src / "state.json").read_text())
            info = json.loads((src / "dataset_info.json").read_text()) if (src / "dataset_info.json").is_file() else {}
            files = [src / f["filename"] for f in state["_data_files"]]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise UsageError(f"{src}/state.json cannot be read ({exc}): is this a save_to_disk folder?") from None
        for f in files:
            if not f.resolve().is_relative_to(src.resolve()) or not f.is_file():
                raise UsageError(f"{src}/state.json names {f.name}, which is missing or outside the folder")
        return files, "arrow", info.get("features") or {}
    files = [src] if src.is_file() else sorted(p for p in src.iterdir() if p.suffix.lower() == ".parquet")
    pa = _pyarrow()
    try:
        meta = pa.parquet.ParquetFile(files[0]).schema_arrow.metadata or {}
    except (pa.ArrowException, OSError) as exc:
        raise UsageError(f"{files[0]} is not a readable Parquet file ({exc})") from None
    try:
        features = json.loads(meta.get(b"huggingface", b"{}")).get("info", {}).get("features") or {}
    except json.JSONDecodeError:
        features = {}
    return files, "parquet", features


def _table(path: Path, kind: str, columns: list[str] | None = None) -> Any:
    pa = _pyarrow()
    try:
        if kind == "arrow":
            return pa.ipc.open_stream(pa.memory_map(str(path))).read_all()
        return pa.parquet.read_table(path, columns=columns)
    except (pa.ArrowException, OSError) as exc:
        raise UsageError(f"{path} cannot be read as {kind} ({exc})") from None


def _image_column(schema: Any, features: dict[str, Any], wanted: str) -> str | None:
    def is_image(name: str) -> bool:
        feature = features.get(name)
        if isinstance(feature, dict) and feature.get("_type") == "Image":
            return True
        field = schema.field(name)
        return getattr(field.type, "num_fields", 0) and {field.type.field(i).name for i in range(field.type.num_fields)} >= {"bytes"}

    if wanted in schema.names:
        if not is_image(wanted):
            raise UsageError(f"column {wanted!r} is not an image column (a datasets.Image struct of bytes)")
        return wanted
    return next((n for n in schema.names if is_image(n)), None)


def read_dataset(src: Path, cols: Columns) -> Inputs:
    files, kind, features = _files(src)
    if not files:
        raise UsageError(f"{src} holds no data files")
    items: list[Item] = []
    image_col: str | None = None
    present: set[str] = set()
    row0 = 0
    for f in files:
        schema = _table(f, kind).schema if kind == "arrow" else _pyarrow().parquet.ParquetFile(f).schema_arrow
        image_col = _image_column(schema, features, cols.image)
        wanted = [c for c in (cols.id, cols.label, cols.text, cols.group) if c in schema.names]
        table = _table(f, kind, wanted)
        data = {c: table.column(c).to_pylist() for c in wanted}
        names = (features.get(cols.label) or {}).get("names") if isinstance(features.get(cols.label), dict) else None
        for r in range(table.num_rows):
            item = Item(str(data[cols.id][r]) if cols.id in data else str(row0 + r), path=f, container=kind,
                        member=image_col, offset=r)
            if cols.label in data:
                value = data[cols.label][r]
                item.label = "" if value is None else (names[value] if names and isinstance(value, int)
                                                       and 0 <= value < len(names) else str(value))
            if cols.text in data:
                item.text = data[cols.text][r] or ""
            if cols.group in data:
                item.group = "" if data[cols.group][r] is None else str(data[cols.group][r])
            items.append(item)
        present |= {name for name, c in (("label", cols.label), ("text", cols.text), ("group", cols.group))
                    if c in data}
        row0 += table.num_rows
    if image_col is None and "text" not in present:
        raise UsageError(f"{src} has no image column (a datasets.Image feature) and no {cols.text!r} column: "
                         "name one with --image-column / --text-column")
    modality = "image" if image_col is not None else "text"
    columns = [c for c in ("label", "group", "text") if c in present]
    return Inputs(items, modality, str(src), columns, kind="hf")


_CACHE: dict[tuple[str, int], Any] = {}


def read_cell(item: Item) -> tuple[bytes, str]:
    """(encoded bytes, file name) of one sample's image cell."""
    if item.member is None or item.path is None or item.offset is None:
        raise InputFailure("sample has no image column")
    pa = _pyarrow()
    try:
        if item.container == "arrow":
            key = (str(item.path), -1)
            if key not in _CACHE:  # memory-mapped: costs address space, not memory
                _CACHE[key] = pa.ipc.open_stream(pa.memory_map(str(item.path))).read_all()
            cell = _CACHE[key].column(item.member)[item.offset].as_py()
        else:
            pf = pa.parquet.ParquetFile(item.path)
            row, group = item.offset, 0
            while row >= pf.metadata.row_group(group).num_rows:
                row -= pf.metadata.row_group(group).num_rows
                group += 1
            key = (str(item.path), group)
            if key not in _CACHE:
                for old in [k for k in _CACHE if k[1] >= 0]:
                    del _CACHE[old]  # one Parquet row group at a time per worker
                _CACHE[key] = pf.read_row_group(group, columns=[item.member]).column(0)
            cell = _CACHE[key][row].as_py()
    except (pa.ArrowException, OSError, IndexError) as exc:
        raise InputFailure(f"cannot read row {item.offset} of {item.path.name} ({exc})") from None
    if not cell:
        raise InputFailure("empty image cell")
    data, name = cell.get("bytes"), cell.get("path") or ""
    if data is None and name:
        path = Path(name) if Path(name).is_absolute() else item.path.parent / name
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise InputFailure(f"image cell points at {name}, which cannot be read ({exc.strerror})") from None
    if not data:
        raise InputFailure("empty image cell")
    return data, name


def _claim(sources: list[str]) -> bool:
    return len(sources) == 1 and is_dataset(Path(sources[0]))


def _read(sources: list[str], options: InputOptions) -> Inputs:
    return read_dataset(Path(sources[0]), options.columns)


def _fetch(item: Item, limit: int | None) -> tuple[bytes, str]:
    return read_cell(item)  # a cell is read whole


FORMAT = InputFormat(
    "hf", "a local Hugging Face dataset: a save_to_disk folder (one split), a .parquet file or a "
    "folder of them; image, label, text and group columns", "a Hugging Face dataset",
    claim=_claim, read=_read, containers=("arrow", "parquet"), fetch=_fetch, options=("columns",),
    labels=True, groups=True, texts=True, captions=True,
)

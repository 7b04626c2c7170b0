"""The listing's data: column names, one sample (`Item`) and the whole input (`Inputs`).

A leaf module: every reader (`listing`, `webdataset`, `hf`) and the decoders import it, and it
imports none of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Columns:
    """Manifest column names; each can be renamed on the command line."""

    id: str = "id"
    path: str = "path"
    text: str = "text"
    label: str = "label"
    group: str = "group"
    image: str = "image"  # Hugging Face datasets: the Image column


@dataclass
class Item:
    id: str
    path: Path | None = None  # the image file, or the tar / Arrow / Parquet file holding it
    text: str | None = None
    label: str | None = None
    group: str | None = None
    container: str | None = None  # None (a file), "tar", "arrow" or "parquet"
    member: str | None = None  # tar member name, or the dataset's image column
    offset: int | None = None  # tar: byte offset of the member's data; datasets: row in the file
    size: int | None = None  # tar: the member's size in bytes
    error: str | None = None  # found unreadable while listing: goes to the failed table
    extra: dict[str, str] = field(default_factory=dict)  # further columns (DICOM tags)
    grey_range: str = "image"  # the decoder's rule for deep grey levels (--grey-range; see `grey`)


@dataclass
class Inputs:
    items: list[Item]
    modality: str  # "image" | "text"
    source: str
    columns: list[str] = field(default_factory=list)  # optional columns present: label, group, text, extras
    kind: str = "files"  # files | manifest | lines | webdataset | hf
    shard_by_file: bool = False  # --shard i/N splits whole files (tar shards), not ids
    grey_range: str = "image"  # --grey-range: image | stored, as given to every item (see `grey`)

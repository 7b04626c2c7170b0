"""The listing's data: column names, the read options, one sample (`Item`) and the whole
input (`Inputs`).

A leaf module: the registry, every format's reader and the decoders import it, and it imports
none of them.
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


@dataclass(frozen=True)
class InputOptions:
    """What a format's ``read`` gets besides its sources (the `stitch embed` flags of the same
    names; `registry.OPTIONS` says which format takes which)."""

    columns: Columns = Columns()
    root: Path | None = None  # manifests: resolve paths here and refuse paths outside it
    where: dict[str, str] = field(default_factory=dict)  # manifests: keep rows whose COL equals VALUE
    label_from: str | None = None  # WebDataset: cls | txt | json:FIELD


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

    def where(self) -> str:
        """The sample as a message names it: its id, and the file (and member) it was read from."""
        if self.path is None:
            return repr(self.id)
        inside = f" member {self.member}" if self.container == "tar" and self.member else (
            f" row {self.offset}" if self.container in ("arrow", "parquet") and self.offset is not None else "")
        return f"{self.id!r} ({self.path}{inside})"


@dataclass
class Inputs:
    items: list[Item]
    modality: str  # "image" | "text"
    source: str
    columns: list[str] = field(default_factory=list)  # optional columns present: label, group, text, extras
    kind: str = "folder"  # the name of the input format that read it (see `registry`)
    shard_by_file: bool = False  # --shard i/N splits whole files (tar shards), not ids
    grey_range: str = "image"  # --grey-range: image | stored, as given to every item (see `grey`)

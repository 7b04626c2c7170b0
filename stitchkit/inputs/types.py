"""The listing's data: column names, the read options, one sample (`Item`) and the whole
input (`Inputs`).

A leaf module: the registry, every format's reader and the decoders import it, and it imports
none of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..errors import UsageError
from ..settings import setting


@dataclass(frozen=True)
class Columns:
    """Manifest column names; each can be renamed on the command line."""

    id: str = setting("id", "Manifest column of the sample ids.")
    path: str = setting("path", "Manifest column of the image paths.")
    text: str = setting("text", "Manifest column of the texts.")
    label: str = setting("label", "Manifest column of the labels.")
    group: str = setting("group", "Manifest column of the groups (a study or patient).")
    image: str = setting("image", "Hugging Face datasets: the image column (else the first datasets.Image column).")


@dataclass(frozen=True)
class InputOptions:
    """What a format's ``read`` gets besides its sources (the `stitch embed` flags of the same
    names; `registry.OPTIONS` says which format takes which)."""

    columns: Columns = Columns()
    root: Path | None = None  # manifests: resolve paths here and refuse paths outside it
    where: dict[str, str] = field(default_factory=dict)  # manifests: keep rows whose COL equals VALUE
    label_from: str | None = None  # WebDataset: cls | txt | json:FIELD


@dataclass(slots=True)
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

    def only(self, ids: Sequence[str], listed_in: str) -> Inputs:
        """These inputs with only the items whose id is in ``ids``, in the inputs' order (`stitch
        embed --ids`); an id that no input has is refused in one line (``listed_in`` names the list)."""
        have = {item.id for item in self.items}
        missing = [i for i in ids if i not in have]
        if missing:
            raise UsageError(f"{listed_in}: {len(missing)} of its {len(ids)} ids are not inputs of {self.source} "
                             f"(first: {missing[0]!r}): check the list, or --id-column")
        wanted = set(ids)
        return replace(self, items=[item for item in self.items if item.id in wanted])


"""`read_inputs`: the one entry point that lists what `stitch embed` reads.

The registry (`registry.resolve`) picks the format that claims the sources (an image folder, a
CSV/JSONL manifest, a .txt file, WebDataset tar shards, a local Hugging Face dataset, or a
format registered later); its reader lists the samples. What holds for every format is checked
here: no empty input, no NUL characters, unique ids; DICOM tags and the grey-level rule are
applied to whatever was listed.
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import attrgetter
from pathlib import Path

from ..errors import UsageError
from .dicom import add_tags, parse_tags
from .folder import IMAGE_SUFFIXES
from .grey import DEFAULT_GREY_RANGE, check_grey_range
from .registry import resolve
from .types import Columns, InputOptions, Inputs, Item

__all__ = ["IMAGE_SUFFIXES", "Columns", "Inputs", "Item", "read_inputs"]


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
    folder or .parquet files, or whatever else a registered format claims (see `registry`).
    ``label_from`` picks a WebDataset label (cls, txt, json:FIELD); ``dicom_tags`` copies allowed
    DICOM header tags into columns (see `dicom.TAG_COLUMNS`); ``grey_range`` (image | stored)
    travels on each item to the decoder (see `grey`).
    """
    check_grey_range(grey_range)
    tags = parse_tags(dicom_tags) if isinstance(dicom_tags, str) or dicom_tags is None \
        else parse_tags(",".join(dicom_tags))
    sources = [source] if isinstance(source, (str, Path)) else list(source)
    if not sources:
        raise UsageError("no input given: name an image folder, a manifest, a .txt file or .tar shards")
    options = InputOptions(columns, Path(root) if root else None, dict(where or {}), label_from)
    given = [name for name, value in (("columns", columns != Columns()), ("root", root), ("where", where),
                                      ("label_from", label_from), ("dicom_tags", tags),
                                      ("grey_range", grey_range != DEFAULT_GREY_RANGE)) if value]
    names = [str(s) for s in sources]
    fmt = resolve(names, given)
    inputs = fmt.read(fmt.paths(names), options)
    inputs.kind, inputs.shard_by_file = fmt.name, fmt.shards
    src = Path(names[0])
    if not inputs.items:
        raise UsageError(f"input {src} holds no samples: check the file, folder or --where filter")
    check_samples(inputs.items, src)
    if tags:
        add_tags(inputs, tags)
    inputs.grey_range = grey_range
    if grey_range != DEFAULT_GREY_RANGE:
        for it in inputs.items:
            it.grey_range = grey_range
    return inputs


def check_samples(items: list[Item], src: Path) -> None:
    """No NUL character in a sample's id, text, label or group (HDF5 strings cannot hold one:
    refused now, not when the store is written at the end) and no id twice. Each check is one
    pass in C over the items (377,110 for MIMIC-CXR); a loop only finds the sample to name."""
    fields = ("id", "text", "label", "group")
    if any("\x00" in "".join(filter(None, map(attrgetter(name), items))) for name in fields):
        for n, it in enumerate(items, 1):
            for name in fields:
                if "\x00" in (getattr(it, name) or ""):
                    raise UsageError(f"input {src} sample {n}: its {name} holds a NUL character: fix the input")
    ids = list(map(attrgetter("id"), items))
    if len(set(ids)) < len(ids):
        seen: set[str] = set()
        dupes = [i for i in ids if i in seen or seen.add(i)]
        raise UsageError(f"input {src}: {len(dupes)} duplicate ids (e.g. {dupes[:3]}): ids must be unique")

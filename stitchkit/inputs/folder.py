"""An image folder: every image file under it (DICOM included), labels from the first sub-folder.

``folder/NORMAL/x.png`` is sample ``NORMAL/x.png`` with label ``NORMAL``; labels are kept only
when every file sits in a sub-folder. Files without an extension are taken when they carry the
DICOM ``DICM`` preamble (PACS exports). A folder in clip-retrieval's layout holds embeddings,
not inputs, and is refused with a pointer to `stitch import`.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import UsageError
from .dicom import has_preamble
from .registry import InputFormat
from .types import InputOptions, Inputs, Item

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp", ".dcm", ".dicom"}


def read_folder(folder: Path) -> Inputs:
    if (folder / "img_emb").is_dir() or (folder / "text_emb").is_dir():
        raise UsageError(f"{folder} holds embeddings (clip-retrieval's layout), not inputs: "
                         f"`stitch import {folder} -o STORE.h5` makes it a store")
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
    return Inputs(items, "image", str(folder), cols, kind="folder")


def _claim(sources: list[str]) -> bool:
    return len(sources) == 1 and Path(sources[0]).is_dir()


def _read(sources: list[str], options: InputOptions) -> Inputs:
    return read_folder(Path(sources[0]))


FORMAT = InputFormat(
    "folder", "a folder of image files (PNG, JPEG, TIFF, …, DICOM); labels from the first sub-folder",
    "an image folder", claim=_claim, read=_read, ray=True, labels=True,
)

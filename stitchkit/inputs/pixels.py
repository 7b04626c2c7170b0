"""One sample's pixels: decoded in the DataLoader worker, mapped to the 8-bit image encoders take.

8-bit images pass as they are. 16-bit PNG/TIFF (PadChest-style) are read at full depth and
scaled by their actual range (min..max -> 0..255): clipping them to 8 bits, as a plain PIL
``convert`` does, turns most of them white. DICOM goes through `dicom.decode_dicom`. Every
decode returns a short mapping kind; the store's ``pixel_mapping`` attribute counts them.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import InputFailure
from .dicom import decode_dicom, has_preamble

if TYPE_CHECKING:
    from .types import Item

DICOM_SUFFIXES = {".dcm", ".dicom"}
PIXEL_POLICY = (
    "8-bit images as stored; 16/32-bit PNG and TIFF scaled by their actual range (min..max -> "
    "0..255); DICOM: modality LUT (RescaleSlope/Intercept), then the file's VOI LUT, else its "
    "first WindowCenter/Width, else the full stored range, MONOCHROME1 inverted, then 0..255"
)
_DEEP_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
_IMAGE_NAMES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp"}


def load_image(path: Path) -> Image.Image:
    """Decode one image file fully (DICOM included), or raise InputFailure with a reason."""
    return load_file(path)[0]


def load_file(path: Path) -> tuple[Image.Image, str]:
    """(image, mapping kind) of one file on disk."""
    path = Path(path)
    if not path.is_file():
        raise InputFailure("file not found" if not path.exists() else "not a regular file")
    if path.stat().st_size == 0:
        raise InputFailure("empty file (0 bytes)")
    suffix = path.suffix.lower()
    # The preamble is only looked for where the name does not say "image" (PACS exports often
    # have no extension): one more open per JPEG would be wasted.
    if suffix in DICOM_SUFFIXES or (suffix not in _IMAGE_NAMES and has_preamble(path)):
        return decode_dicom(path)
    return _pil(path)


def decode_bytes(data: bytes, name: str) -> tuple[Image.Image, str]:
    """(image, mapping kind) of an encoded image held in memory (a tar member, a dataset cell)."""
    if not data:
        raise InputFailure(f"empty member {name} (0 bytes)")
    if Path(name).suffix.lower() in DICOM_SUFFIXES or data[128:132] == b"DICM":
        return decode_dicom(data)
    return _pil(io.BytesIO(data))


def _pil(src: Path | io.BytesIO) -> tuple[Image.Image, str]:
    try:
        image = Image.open(src)
        image.load()
    except UnidentifiedImageError:
        raise InputFailure("not an image (format not recognised)") from None
    except Image.DecompressionBombError as exc:
        raise InputFailure(f"image too large ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputFailure(f"corrupt or truncated image ({exc})") from None
    return to_8bit(image)


def to_8bit(image: Image.Image) -> tuple[Image.Image, str]:
    """Deep single-channel images scaled by their actual range; others unchanged."""
    if image.mode not in _DEEP_MODES:
        return image, "8-bit as stored"
    values = np.asarray(image, dtype=np.float64)
    finite = values[np.isfinite(values)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    scaled = (np.nan_to_num(values, nan=lo) - lo) / (hi - lo) if hi > lo else np.zeros_like(values)
    grey = Image.fromarray(np.rint(np.clip(scaled, 0, 1) * 255).astype(np.uint8), "L")
    depth = "32-bit float" if image.mode == "F" else ("32-bit" if image.mode == "I" and hi > 65535 else "16-bit")
    return grey, f"{depth} {image.format or 'image'}: actual range"


def load_item(item: Item) -> tuple[Image.Image, str]:
    """(image, mapping kind) of one listed sample, wherever its bytes live."""
    if item.error:
        raise InputFailure(item.error)
    if item.container is None:
        if item.path is None:
            raise InputFailure("no image for this sample")
        return load_file(item.path)
    if item.container == "tar":
        from .webdataset import read_member

        return decode_bytes(read_member(item), item.member or "")
    from .hf import read_cell

    data, name = read_cell(item)
    return decode_bytes(data, name)

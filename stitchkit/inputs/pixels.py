"""One sample's pixels: decoded in the DataLoader worker, mapped to the 8-bit image encoders take.

8-bit images pass as they are. 16-bit PNG/TIFF (PadChest-style) are read at full depth and
mapped by the grey-range rule of `grey` (the image's own min..max -> 0..255 by default, or the
nominal 16-bit range): clipping them to 8 bits, as a plain PIL ``convert`` does, turns most of
them white. DICOM goes through `dicom.decode_dicom`, same rule. Every decode returns a short
mapping kind naming the rule; the store's ``pixel_mapping`` attribute counts them.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import InputFailure
from .dicom import DICOM_SUFFIXES, decode_dicom, has_preamble
from .grey import DEFAULT_GREY_RANGE, KIND, check_grey_range, image_range, to_unit
from .registry import for_container

if TYPE_CHECKING:
    from .types import Item

PIXEL_POLICY = (
    "8-bit images (and DICOM of 8 bits or fewer without VOI) as stored; deeper than 8 bits, DICOM "
    "and 16/32-bit PNG/TIFF alike: modality LUT (RescaleSlope/Intercept), then the file's VOI LUT, "
    "else its first WindowCenter/Width, else the grey range (grey_range: image = the image's own "
    "min..max, stored = the nominal stored range) -> 0..255; MONOCHROME1 inverted"
)
_DEEP_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
_IMAGE_NAMES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp"}


def load_image(path: Path, grey_range: str = DEFAULT_GREY_RANGE) -> Image.Image:
    """Decode one image file fully (DICOM included), or raise InputFailure with a reason."""
    return load_file(path, grey_range)[0]


def load_file(path: Path, grey_range: str = DEFAULT_GREY_RANGE) -> tuple[Image.Image, str]:
    """(image, mapping kind) of one file on disk; ``grey_range``: image | stored (see `grey`)."""
    path = Path(path)
    if not path.is_file():
        raise InputFailure("file not found" if not path.exists() else "not a regular file")
    if path.stat().st_size == 0:
        raise InputFailure("empty file (0 bytes)")
    suffix = path.suffix.lower()
    # The preamble is only looked for where the name does not say "image" (PACS exports often
    # have no extension): one more open per JPEG would be wasted.
    if suffix in DICOM_SUFFIXES or (suffix not in _IMAGE_NAMES and has_preamble(path)):
        return decode_dicom(path, grey_range)
    return _pil(path, grey_range)


def decode_bytes(data: bytes, name: str, grey_range: str = DEFAULT_GREY_RANGE) -> tuple[Image.Image, str]:
    """(image, mapping kind) of an encoded image held in memory (a tar member, a dataset cell)."""
    if not data:
        raise InputFailure(f"empty member {name} (0 bytes)")
    if Path(name).suffix.lower() in DICOM_SUFFIXES or data[128:132] == b"DICM":
        return decode_dicom(data, grey_range)
    return _pil(io.BytesIO(data), grey_range)


def _pil(src: Path | io.BytesIO, grey_range: str) -> tuple[Image.Image, str]:
    try:
        image = Image.open(src)
        image.load()
    except UnidentifiedImageError:
        raise InputFailure("not an image (format not recognised)") from None
    except Image.DecompressionBombError as exc:
        raise InputFailure(f"image too large ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputFailure(f"corrupt or truncated image ({exc})") from None
    return to_8bit(image, grey_range)


def to_8bit(image: Image.Image, grey_range: str = DEFAULT_GREY_RANGE) -> tuple[Image.Image, str]:
    """Deep single-channel images mapped by the grey-range rule; others unchanged.

    PNG and TIFF carry no VOI LUT or window, so the range decides: the image's own min..max, or
    the nominal range of its depth (0..65535; 32-bit integers: their signed range). Float
    images have no nominal range and always take their own.
    """
    check_grey_range(grey_range)
    if image.mode not in _DEEP_MODES:
        return image, "8-bit as stored"
    values = np.asarray(image, dtype=np.float64)
    lo, hi = image_range(values)
    wide = image.mode == "I" and (hi > 65535 or lo < 0)
    depth = "32-bit float" if image.mode == "F" else ("32-bit" if wide else "16-bit")
    rule = "image" if image.mode == "F" else grey_range
    if rule == "stored":
        lo, hi = (-(2.0**31), 2.0**31 - 1) if wide else (0.0, 65535.0)
    grey = Image.fromarray(np.rint(to_unit(values, lo, hi) * 255).astype(np.uint8), "L")
    return grey, f"{depth} {image.format or 'image'}: {KIND[rule]}"


def load_item(item: Item) -> tuple[Image.Image, str]:
    """(image, mapping kind) of one listed sample, wherever its bytes live."""
    if item.error:
        raise InputFailure(item.error)
    if item.container is None:
        if item.path is None:
            raise InputFailure("no image for this sample")
        return load_file(item.path, item.grey_range)
    fetch = for_container(item.container).fetch  # a tar member, a dataset cell: its format reads it
    if fetch is None:
        raise InputFailure(f"no reader for samples held in {item.container!r}")
    data, name = fetch(item, None)
    return decode_bytes(data, name, item.grey_range)

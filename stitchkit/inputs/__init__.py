"""What `stitch embed` reads, and how each sample's pixels are decoded.

One module per format: `listing` (folders, manifests, text files and the dispatch),
`pixels` (8/16-bit images), `dicom`, `webdataset` (tar shards) and `hf` (local Hugging Face
datasets); `grey` holds the one grey-level rule `pixels` and `dicom` follow. Listing happens in the main process; decoding (`load_item`) in DataLoader workers.
"""

from __future__ import annotations

from .dicom import TAG_COLUMNS, decode_dicom, parse_tags
from .grey import DEFAULT_GREY_RANGE, GREY_RANGES
from .listing import IMAGE_SUFFIXES, Columns, Inputs, Item, read_inputs
from .pixels import PIXEL_POLICY, decode_bytes, load_file, load_image, load_item, to_8bit

__all__ = [
    "DEFAULT_GREY_RANGE", "GREY_RANGES", "IMAGE_SUFFIXES", "PIXEL_POLICY", "TAG_COLUMNS", "Columns",
    "Inputs", "Item", "decode_bytes", "decode_dicom", "load_file", "load_image", "load_item", "parse_tags",
    "read_inputs", "to_8bit",
]

"""What `stitch embed` reads, and how each sample's pixels are decoded.

One module per input format, each defining ``FORMAT`` and named by one line in
`registry.FORMATS`: `folder` (image folders), `manifest` (CSV/JSONL), `textfile` (.txt),
`dicom` (DICOM files wherever they are listed), `webdataset` (tar shards) and `hf` (local
Hugging Face datasets). `listing.read_inputs` lists the samples of whatever format claims the
input; `pixels` decodes 8/16-bit images and asks the registry for the bytes of samples held in
containers; `grey` holds the one grey-level rule `pixels` and `dicom` follow. Listing happens in
the main process; decoding (`load_item`) in DataLoader workers.
"""

from __future__ import annotations

from .dicom import TAG_COLUMNS, decode_dicom, parse_tags
from .grey import DEFAULT_GREY_RANGE, GREY_RANGES
from .listing import IMAGE_SUFFIXES, Columns, Inputs, Item, read_inputs
from .pixels import PIXEL_POLICY, decode_bytes, load_file, load_image, load_item, to_8bit
from .registry import InputFormat, formats, input_format, register
from .types import InputOptions

__all__ = [
    "DEFAULT_GREY_RANGE", "GREY_RANGES", "IMAGE_SUFFIXES", "PIXEL_POLICY", "TAG_COLUMNS", "Columns",
    "InputFormat", "Inputs", "Item", "InputOptions", "decode_bytes", "decode_dicom", "formats", "input_format",
    "load_file", "load_image", "load_item", "parse_tags", "read_inputs", "register", "to_8bit",
]

"""One rule for grey levels deeper than 8 bits (DICOM and 16/32-bit PNG/TIFF alike).

The file's VOI LUT, else its window (WindowCenter/Width; DICOM only), else a linear map of a
range onto 0..1: the image's own range (min..max of its modality values, the default) or, with
``--grey-range stored``, the nominal stored range (0..2^BitsStored-1, through the modality LUT).
The decoders name the rule each file took in its mapping kind, which the store's provenance
attribute ``pixel_mapping`` counts.
"""

from __future__ import annotations

import numpy as np

from ..errors import UsageError

GREY_RANGES = ("image", "stored")
DEFAULT_GREY_RANGE = "image"
KIND = {"image": "image range", "stored": "stored range"}


def check_grey_range(value: str) -> str:
    if value not in GREY_RANGES:
        raise UsageError(f"--grey-range {value!r}: use one of {', '.join(GREY_RANGES)}")
    return value


def image_range(values: np.ndarray) -> tuple[float, float]:
    """min..max of the finite values ((0, 0) when there are none)."""
    finite = values[np.isfinite(values)]
    return (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)


def to_unit(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``lo..hi`` -> 0..1, clipped; NaN counts as ``lo``.

    A constant image under the image-range rule (``hi == lo``, e.g. a blank frame) maps to 0,
    black, instead of dividing by zero: it has no contrast to keep, and black is what the 16-bit
    PNG reader always gave it (tests/test_inputs_grey_rule.py checks DICOM and PNG).
    """
    x = np.nan_to_num(np.asarray(values, dtype=np.float64), nan=lo, posinf=hi, neginf=lo)
    if not hi > lo:
        return np.zeros_like(x)
    return np.clip((x - lo) / (hi - lo), 0, 1)

"""16-bit PNG and TIFF (PadChest-style) read at full depth and mapped by the grey-range rule:
their own min..max by default, the nominal 0..65535 with ``grey_range="stored"``."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stitchkit.inputs import load_file, read_inputs


@pytest.fixture(scope="module")
def xray(data: Path) -> np.ndarray:
    path = sorted((data / "kermany-pneumonia-224" / "test" / "PNEUMONIA").iterdir())[0]
    return np.asarray(Image.open(path).convert("L"))


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_sixteen_bit_is_scaled_by_its_image_range(xray, tmp_path, suffix):
    # A real X-ray spread over 1,000..~26,500 of 0..65,535, as a 12-14 bit detector writes it.
    wide = (1000 + xray.astype(np.uint16) * 100).astype(np.uint16)
    path = tmp_path / f"x{suffix}"
    Image.fromarray(wide).save(path)
    assert Image.open(path).mode.startswith("I")  # stored at full depth
    image, how = load_file(path)
    lo, hi = float(wide.min()), float(wide.max())
    expected = np.rint((wide - lo) / (hi - lo) * 255).astype(np.uint8)
    assert image.mode == "L" and np.array_equal(np.asarray(image), expected)
    assert how.startswith("16-bit") and how.endswith(": image range")
    stored, how = load_file(path, "stored")  # the nominal range: 1,000..26,500 of 0..65,535
    assert np.array_equal(np.asarray(stored), np.rint(wide / 65535 * 255).astype(np.uint8))
    assert how.endswith(": stored range")
    # What PIL's own convert does: clip to 8 bits, so nearly every pixel is white.
    assert (np.asarray(Image.open(path).convert("L")) == 255).mean() > 0.9
    assert (np.asarray(image) == 255).mean() < 0.01


def test_a_flat_16_bit_image_is_black_not_a_division_by_zero(tmp_path):
    path = tmp_path / "flat.png"
    Image.fromarray(np.full((8, 8), 4000, dtype=np.uint16)).save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning from a 0/0
        image, how = load_file(path)
    assert np.asarray(image).max() == 0 and how.endswith(": image range")


def test_eight_bit_images_pass_unchanged(xray, tmp_path):
    path = tmp_path / "x.png"
    Image.fromarray(xray).save(path)
    image, how = load_file(path)
    assert how == "8-bit as stored" and np.array_equal(np.asarray(image), xray)


def test_folders_list_16_bit_tiffs(xray, tmp_path):
    Image.fromarray(xray.astype(np.uint16) * 257).save(tmp_path / "a.tiff")
    assert [it.id for it in read_inputs(tmp_path).items] == ["a.tiff"]

"""DICOM input: files written with pydicom from real Kermany images, and pydicom's own test files.

`write_dicom` is shared by the other input tests (tar shards holding .dcm members, bad inputs).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from stitchkit.errors import InputFailure
from stitchkit.inputs import decode_dicom, load_image, read_inputs

pydicom = pytest.importorskip("pydicom")
from pydicom.data import get_testdata_file  # noqa: E402
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, generate_uid  # noqa: E402

DX = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
PATIENT_NAME = "Doe^Jane"


def write_dicom(path: Path, stored: np.ndarray, *, photometric: str = "MONOCHROME2", bits: int = 16,
                allocated: int = 16, slope: float | None = None, intercept: float | None = None,
                window: tuple[float, float] | None = None, study: str = "1.2.3.4", patient: str = "P001",
                view: str = "PA", preamble: bool = True) -> Path:
    """A single-frame DX image the way a modality writes one (patient name included)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DX
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = DX, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, generate_uid()
    ds.PatientName, ds.PatientID, ds.ViewPosition, ds.Modality = PATIENT_NAME, patient, view, "DX"
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = allocated, bits, bits - 1, 0
    if slope is not None:
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = slope, intercept or 0, "US"
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = np.ascontiguousarray(stored, dtype="<u2" if allocated == 16 else "u1").tobytes()
    if preamble:
        ds.save_as(path, enforce_file_format=True)
    else:
        ds.save_as(path, implicit_vr=False, little_endian=True)  # no preamble, no file meta
    return path


@pytest.fixture(scope="module")
def pixels(data: Path) -> dict[str, np.ndarray]:
    """Six real 8-bit chest X-rays (3 normal, 3 pneumonia) as grey arrays."""
    root = data / "kermany-pneumonia-224" / "test"
    files = sorted((root / "NORMAL").iterdir())[:3] + sorted((root / "PNEUMONIA").iterdir())[:3]
    return {f.stem: np.asarray(Image.open(f).convert("L")) for f in files}


def _one(pixels: dict[str, np.ndarray]) -> np.ndarray:
    return next(iter(pixels.values()))


def test_monochrome2_16bit_stored_range_gives_the_png_pixels(pixels, tmp_path):
    png = _one(pixels)
    image, how = decode_dicom(write_dicom(tmp_path / "a.dcm", png.astype(np.uint16) * 257), "stored")
    assert np.array_equal(np.asarray(image), png)
    assert how == "DICOM MONOCHROME2 16-bit: stored range"


def test_monochrome1_is_inverted(pixels, tmp_path):
    png = _one(pixels)
    stored = 65535 - png.astype(np.uint16) * 257
    image, how = decode_dicom(write_dicom(tmp_path / "a.dcm", stored, photometric="MONOCHROME1"), "stored")
    assert np.array_equal(np.asarray(image), png)
    assert how == "DICOM MONOCHROME1 16-bit: stored range, inverted"


def test_rescale_then_the_files_window(pixels, tmp_path):
    png = _one(pixels)
    # 12 bits stored; values 8*png - 1024 after rescale; the window maps exactly that span to 0..1.
    stored = png.astype(np.uint16) * 16
    path = write_dicom(tmp_path / "a.dcm", stored, bits=12, slope=0.5, intercept=-1024, window=(-3.5, 2041))
    image, how = decode_dicom(path)
    assert np.array_equal(np.asarray(image), png)
    assert how == "DICOM MONOCHROME2 12-bit: rescale, window (file, linear)"


def test_rescale_without_window_maps_the_image_range_or_the_stored_range(pixels, tmp_path):
    png = _one(pixels)
    stored = png.astype(np.uint16) * 16  # 0..4080 of the 12-bit 0..4095
    path = write_dicom(tmp_path / "a.dcm", stored, bits=12, slope=2.0, intercept=-1024)
    image, how = decode_dicom(path)  # default: the image's own min..max of 2*stored - 1024
    lo, hi = float(png.min()), float(png.max())
    assert np.array_equal(np.asarray(image), np.rint((png - lo) / (hi - lo) * 255).astype(np.uint8))
    assert how == "DICOM MONOCHROME2 12-bit: rescale, image range"
    image, how = decode_dicom(path, "stored")  # -1024..7166 (0..4095 rescaled) -> 0..255
    expected = np.rint(png.astype(float) * 16 / 4095 * 255)
    assert np.abs(np.asarray(image).astype(float) - expected).max() <= 1
    assert how == "DICOM MONOCHROME2 12-bit: rescale, stored range"


def test_the_files_voi_lut_wins_over_its_window(pixels, tmp_path):
    png = _one(pixels)
    path = write_dicom(tmp_path / "a.dcm", png.astype(np.uint16) * 16, bits=12, window=(100, 50))
    ds = pydicom.dcmread(path)
    item = Dataset()
    item.add_new(0x00283002, "US", [4096, 0, 8])  # LUTDescriptor: 4096 entries from 0, 8-bit out
    item.add_new(0x00283006, "US", [v // 16 for v in range(4096)])  # LUTData
    ds.VOILUTSequence = [item]
    ds.save_as(path)
    image, how = decode_dicom(path)
    assert np.array_equal(np.asarray(image), png)
    assert how == "DICOM MONOCHROME2 12-bit: VOI LUT (file)"


def test_a_file_without_preamble_named_dcm_still_reads(pixels, tmp_path):
    png = _one(pixels)
    path = write_dicom(tmp_path / "raw.dcm", png.astype(np.uint16) * 257, preamble=False)
    assert path.read_bytes()[128:132] != b"DICM"
    assert np.array_equal(np.asarray(load_image(path, "stored")), png)


def test_compressed_syntaxes_decode_to_the_uncompressed_pixels():
    pytest.importorskip("pylibjpeg")  # the `dicom` extra, in dev
    plain = np.asarray(decode_dicom(Path(get_testdata_file("MR_small.dcm")))[0])
    for name in ("MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm"):
        image, how = decode_dicom(Path(get_testdata_file(name)))
        assert np.array_equal(np.asarray(image), plain), name
        assert how == "DICOM MONOCHROME2 16-bit: window (file, linear)"


def test_odd_pydicom_files_read_or_fail_with_a_reason():
    ct, how = decode_dicom(Path(get_testdata_file("CT_small.dcm")))
    assert ct.mode == "L" and "rescale" in how
    palette, how = decode_dicom(Path(get_testdata_file("examples_palette.dcm")))
    assert palette.mode == "RGB" and how == "DICOM PALETTE COLOR 16-bit: palette LUT (file)"
    reasons = {
        "test-SR.dcm": "DICOM without pixel data (Comprehensive SR Storage)",
        "rtdose.dcm": "multi-frame DICOM (15 frames)",
        "SC_rgb_rle_2frame.dcm": "multi-frame DICOM (2 frames)",
        "MR_truncated.dcm": "less than expected",
        "badVR.dcm": "invalid NumberOfFrames",
    }
    for name, reason in reasons.items():
        with pytest.raises(InputFailure, match=reason.replace("(", r"\(").replace(")", r"\)")):
            decode_dicom(Path(get_testdata_file(name)))


def test_a_missing_decoder_is_named():
    """Without pylibjpeg (blocked in a fresh interpreter, as when the extra is not installed)
    JPEG-LS has no decoder; Pillow still decodes JPEG 2000."""
    code = (
        "import sys\n"
        "for m in ('pylibjpeg', 'libjpeg', 'openjpeg'): sys.modules[m] = None\n"
        "from pathlib import Path\n"
        "from pydicom.data import get_testdata_file\n"
        "from stitchkit.inputs import decode_dicom\n"
        "from stitchkit.errors import InputFailure\n"
        "try:\n"
        "    decode_dicom(Path(get_testdata_file('MR_small_jpeg_ls_lossless.dcm')))\n"
        "except InputFailure as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "no installed decoder handles JPEG-LS Lossless Image Compression" in out.stdout, out.stderr
    assert "pip install 'stitchkit[dicom]'" in out.stdout


def test_dicom_tags_are_taken_by_flag_and_names_never(pixels, tmp_path):
    folder = tmp_path / "dicoms"
    folder.mkdir()
    for i, (stem, png) in enumerate(pixels.items()):
        write_dicom(folder / f"{stem}.dcm", png.astype(np.uint16) * 257, study=f"1.2.{i // 2}",
                    patient=f"P{i // 2:03d}", view="AP" if i % 2 else "PA")
    inputs = read_inputs(folder, dicom_tags="default")
    assert inputs.columns == ["group", "view_position", "patient_id"]
    first = inputs.items[0]
    assert (first.group, first.extra["view_position"], first.extra["patient_id"]) == ("1.2.0", "PA", "P000")
    assert read_inputs(folder).columns == []  # nothing without the flag
    from stitchkit.errors import UsageError

    with pytest.raises(UsageError, match="identifying tags are never copied"):
        read_inputs(folder, dicom_tags="PatientName")


@pytest.mark.slow
def test_embedding_a_dicom_equals_embedding_the_same_pixels_as_png(pixels, tmp_path):
    """lite0 through `stitch embed --grey-range stored`, the nominal-range rule DICOMs without a
    window had before issue 20: 16-bit MONOCHROME2, inverted MONOCHROME1, rescaled + windowed, a
    12-bit rescaled file without window, and an extension-less file with the DICM preamble,
    against PNGs of the pixels the nominal range gives (the default image range is in
    tests/test_inputs_grey_rule.py)."""
    from .conftest import run_stitch

    dicoms, pngs = tmp_path / "dicoms", tmp_path / "pngs"
    dicoms.mkdir()
    pngs.mkdir()
    kinds = ["m2", "m1", "window", "rescaled", "m1", "bare"]
    for i, ((stem, png), kind) in enumerate(zip(pixels.items(), kinds, strict=True)):
        wide = png.astype(np.uint16)
        name = dicoms / (stem if kind == "bare" else f"{stem}.dcm")
        if kind == "m1":
            write_dicom(name, 65535 - wide * 257, photometric="MONOCHROME1", study=f"1.2.{i}")
        elif kind == "window":
            write_dicom(name, wide * 16, bits=12, slope=0.5, intercept=-1024, window=(-3.5, 2041), study=f"1.2.{i}")
        elif kind == "rescaled":
            # Modality values 0.125 * stored - 125 = the pixels; the nominal 12-bit range 0..4095
            # spans -125..386.875 of them, so the pixels land in about half the grey scale.
            write_dicom(name, 1000 + 8 * wide, bits=12, slope=0.125, intercept=-125, study=f"1.2.{i}")
            png = np.rint((wide.astype(float) + 125) / (0.125 * 4095) * 255).astype(np.uint8)
        else:
            write_dicom(name, wide * 257, study=f"1.2.{i}")
        Image.fromarray(png).save(pngs / f"{stem}.png")
    for src, out, extra in ((dicoms, tmp_path / "d.h5", ["--dicom-tags", "default", "--grey-range", "stored"]),
                            (pngs, tmp_path / "p.h5", [])):
        done = run_stitch("embed", src, "-m", "lite0", "-o", out, "--workers", "1", *extra)
        assert done.returncode == 0, done.stderr
    with h5py.File(tmp_path / "d.h5") as d, h5py.File(tmp_path / "p.h5") as p:
        d_ids = [i.decode() for i in d["ids"][()]]
        p_ids = [i.decode() for i in p["ids"][()]]
        assert sorted(Path(i).stem for i in d_ids) == sorted(Path(i).stem for i in p_ids)
        order = [p_ids.index(Path(i).stem + ".png") for i in d_ids]
        a, b = d["embeddings"][()], p["embeddings"][()][order]
        cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        assert cos.min() >= 0.999, cos
        assert len(d_ids) == 6 and "failed" not in d
        assert {g.decode() for g in d["groups"][()]} == {f"1.2.{i}" for i in range(6)}
        assert {v.decode() for v in d["view_position"][()]} == {"PA"}
        mapping = json.loads(d.attrs["pixel_mapping"])
        assert sum(mapping["counts"].values()) == 6
        assert mapping["grey_range"] == "stored"
        assert mapping["counts"]["DICOM MONOCHROME1 16-bit: stored range, inverted"] == 2
        assert mapping["counts"]["DICOM MONOCHROME2 12-bit: rescale, stored range"] == 1
    assert PATIENT_NAME.encode() not in (tmp_path / "d.h5").read_bytes()

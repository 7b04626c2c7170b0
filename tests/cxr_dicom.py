"""Writing a chest X-ray DICOM as RSNA, SIIM and VinDr-CXR publish theirs, from real pixels.

Shared by tests/test_cxr_rsna.py, test_cxr_siim.py and test_cxr_vindr.py; also the two fixtures
they need from the shared data (skipping cleanly without it or without torchxrayvision's wheel).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from stitchkit.datasets import data_root
from stitchkit.errors import UsageError
from stitchkit.inputs.cxr.layout import shipped_file

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"  # RSNA's and SIIM's converted radiographs
DIGITAL_XRAY = "1.2.840.10008.5.1.4.1.1.1.1"  # VinDr-CXR's


def write_cxr_dicom(path: Path, grey: np.ndarray, *, patient: str, view: str | None = None,
                    uid: str | None = None, bits: int = 8, modality: str = "CR",
                    sop_class: str = SECONDARY_CAPTURE) -> Path:
    """An uncompressed MONOCHROME2 DICOM of the 8-bit ``grey`` pixels, stored in ``bits`` bits
    (8: as is; 12-16: scaled to the full range, as a detector writes), with PatientID and, where
    given, ViewPosition and the SOPInstanceUID (SIIM names its files by it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    uid = uid or generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class, uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, uid
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientID, ds.Modality, ds.BodyPartExamined = patient, modality, "CHEST"
    if view is not None:
        ds.ViewPosition = view
    ds.Rows, ds.Columns = grey.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    allocated = 8 if bits == 8 else 16
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = allocated, bits, bits - 1, 0
    stored = grey if bits == 8 else np.round(grey.astype(np.float64) * (2**bits - 1) / 255)
    ds.PixelData = np.ascontiguousarray(stored, dtype="u1" if bits == 8 else "<u2").tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def nih_pixels(data: Path, n: int) -> list[np.ndarray]:
    """The first ``n`` real NIH radiographs of the shared folder (256 x 256 grey), alternating
    no finding and pneumonia."""
    root = data / "nih-pneumonia-256" / "images"
    normal, pneumonia = sorted((root / "no_finding").iterdir()), sorted((root / "pneumonia").iterdir())
    files = [f for pair in zip(normal, pneumonia, strict=False) for f in pair][:n]
    return [np.asarray(Image.open(f).convert("L")) for f in files]


def real_data() -> Path:
    """The shared data folder, or a skip."""
    try:
        return data_root()
    except UsageError:
        pytest.skip("needs the shared data folder (../shared/data or STITCHKIT_DATA)")


def shipped(name: str) -> Path:
    """A label file torchxrayvision's wheel ships, or a skip."""
    try:
        return shipped_file(name)
    except UsageError:
        pytest.skip(f"needs torchxrayvision's wheel (its data/{name})")

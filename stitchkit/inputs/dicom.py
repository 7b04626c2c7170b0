"""DICOM pixels as a radiologist would see them, mapped to the 8-bit grey image encoders take.

The order is the standard's (PS3.3 C.11): stored values -> modality LUT (RescaleSlope /
RescaleIntercept or a Modality LUT) -> VOI (the file's VOI LUT, else its first
WindowCenter/WindowWidth, else the grey-range rule of `grey`: the image's own range of modality
values by default, or the nominal stored range mapped through the modality LUT) -> MONOCHROME1
inverted -> 0..1 -> 0..255. Files of 8 bits or fewer without a VOI take their stored range, as
an 8-bit PNG is taken as stored. Each decoded file reports a short mapping *kind* naming the rule
("DICOM MONOCHROME1 12-bit: rescale, window (file, linear), inverted") that the store's
provenance counts.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image

from ..errors import InputFailure, UsageError
from .grey import DEFAULT_GREY_RANGE, KIND, check_grey_range, image_range, to_unit
from .registry import InputFormat, for_container
from .types import Inputs

DICOM_SUFFIXES = {".dcm", ".dicom"}

# Tags a researcher groups or splits by, and the store column each goes to. An allowlist:
# names, birth dates and other identifying tags are never read into a store.
TAG_COLUMNS = {
    "StudyInstanceUID": "group",
    "SeriesInstanceUID": "series_uid",
    "PatientID": "patient_id",
    "ViewPosition": "view_position",
    "Modality": "modality",
    "BodyPartExamined": "body_part",
    "ImageLaterality": "laterality",
    "Laterality": "laterality",
}
DEFAULT_TAGS = ("StudyInstanceUID", "ViewPosition", "PatientID")
_NEVER = ("PatientName", "PatientBirthDate", "PatientAddress", "OtherPatientNames",
          "ReferringPhysicianName", "InstitutionName", "PatientTelephoneNumbers")


def parse_tags(text: str | None) -> tuple[str, ...]:
    """``--dicom-tags`` value -> tag keywords; 'default' means StudyInstanceUID,ViewPosition,PatientID."""
    if not text:
        return ()
    names = DEFAULT_TAGS if text.strip() == "default" else tuple(t.strip() for t in text.split(",") if t.strip())
    for name in names:
        if name in _NEVER or name.startswith("Patient") and name != "PatientID":
            raise UsageError(f"--dicom-tags {name}: identifying tags are never copied into a store; "
                             f"allowed: {', '.join(TAG_COLUMNS)}")
        if name not in TAG_COLUMNS:
            raise UsageError(f"--dicom-tags {name}: unknown or not allowed; allowed: {', '.join(TAG_COLUMNS)}")
    columns = [TAG_COLUMNS[n] for n in names]
    if len(set(columns)) != len(columns):
        raise UsageError(f"--dicom-tags {text!r}: two tags fill the same column; keep one")
    return names


def _pydicom() -> Any:
    try:
        import pydicom
    except ImportError:  # pragma: no cover - pydicom is a base dependency
        raise UsageError("reading DICOM needs pydicom: pip install pydicom") from None
    return pydicom


def has_preamble(path: Path) -> bool:
    """A DICOM Part 10 file: 128 bytes of preamble, then b'DICM'."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def _read(src: Path | BinaryIO, *, header_only: bool = False) -> Any:
    pydicom = _pydicom()
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(src, stop_before_pixels=header_only)
    except InvalidDicomError:
        # Files without the 'DICM' preamble (older or raw datasets) are still DICOM when named
        # .dcm; reading them forced is what dcmtk and pydicom's own tools do.
        if hasattr(src, "seek"):
            src.seek(0)
        try:
            ds = pydicom.dcmread(src, stop_before_pixels=header_only, force=True)
        except Exception as exc:  # noqa: BLE001 - a garbage file raises anything
            raise InputFailure(f"not a DICOM file ({_first_line(exc)})") from None
        if len(ds) == 0 or not any(tag.group >= 0x0008 for tag in ds.keys()):
            raise InputFailure("not a DICOM file (no DICM preamble and no data elements)") from None
        return ds
    except (EOFError, OSError, ValueError, TypeError, KeyError) as exc:
        raise InputFailure(f"corrupt or truncated DICOM ({_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    """The exception's text on one line (pydicom lists each plugin's error on its own line)."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    text = " ".join(lines) or type(exc).__name__
    return text if len(text) <= 240 else text[:237] + "..."


def read_tags(src: Path | bytes, names: tuple[str, ...]) -> dict[str, str]:
    """The chosen tags as store columns ("" where absent); headers only, pixels not read."""
    if not names:
        return {}
    try:
        ds = _read(io.BytesIO(src) if isinstance(src, bytes) else src, header_only=True)
    except InputFailure:
        return {TAG_COLUMNS[n]: "" for n in names}  # the pixel read fails it with a reason
    out = {}
    for name in names:
        value = ds.get(name)
        out[TAG_COLUMNS[name]] = "" if value is None else str(value).replace("\x00", "").strip()
    return out


def is_dicom(path: Path) -> bool:
    """A DICOM file by its name, or (without an extension that says so) by its preamble."""
    return path.suffix.lower() in DICOM_SUFFIXES or (path.is_file() and has_preamble(path))


def add_tags(inputs: Inputs, tags: tuple[str, ...]) -> None:
    """Copy the chosen header tags of DICOM samples into columns ("" for other samples).

    Files are read from disk; a DICOM member of a container (a tar) through its format's fetch,
    its first MiB only (the header).
    """
    names = [TAG_COLUMNS[t] for t in tags]
    if "group" in names and "group" in inputs.columns:
        raise UsageError("--dicom-tags StudyInstanceUID fills the group column, but the manifest has one: "
                         "drop one of them")
    for item in inputs.items:
        values: dict[str, str] = {}
        if item.error is None and item.container is None and item.path is not None and is_dicom(item.path):
            values = read_tags(item.path, tags)
        elif item.container is not None and (item.member or "").lower().endswith(tuple(DICOM_SUFFIXES)):
            fetch = for_container(item.container).fetch
            try:
                values = read_tags(fetch(item, 1 << 20)[0], tags) if fetch is not None else {}
            except Exception:  # noqa: BLE001 - a bad member fails later, with its reason
                values = {}
        for name in names:
            if name == "group":
                item.group = values.get(name, "")
            else:
                item.extra[name] = values.get(name, "")
    inputs.columns = [*inputs.columns, *(n for n in names if n not in inputs.columns)]


def decode_dicom(src: Path | bytes, grey_range: str = DEFAULT_GREY_RANGE) -> tuple[Image.Image, str]:
    """One DICOM image -> (8-bit PIL image, mapping kind); InputFailure with a reason otherwise.

    ``grey_range`` (image | stored) is the range mapped to 0..255 when the file has neither a
    VOI LUT nor a window and is deeper than 8 bits (see `grey`).
    """
    check_grey_range(grey_range)
    ds = _read(io.BytesIO(src) if isinstance(src, bytes) else src)
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        sop = ds.get("SOPClassUID")
        what = getattr(sop, "name", None) or (str(sop) if sop else "no SOP class")
        raise InputFailure(f"DICOM without pixel data ({what}): not an image")
    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        raise InputFailure(f"DICOM with an invalid NumberOfFrames {ds.get('NumberOfFrames')!r}") from None
    if frames > 1:
        raise InputFailure(f"multi-frame DICOM ({frames} frames): one image per sample is expected; "
                           "split the frames into single files first")
    ts = getattr(ds, "file_meta", None) and ds.file_meta.get("TransferSyntaxUID")
    try:
        arr = ds.pixel_array
    except Exception as exc:  # noqa: BLE001 - pydicom's plugins raise many kinds
        message = _first_line(exc)
        if ts is not None and getattr(ts, "is_compressed", False):
            lowered = str(exc).lower()
            if "no pixel data decoders" in lowered or "missing required dependencies" in lowered \
                    or "plugins are missing" in lowered or "install" in lowered:
                raise InputFailure(
                    f"no installed decoder handles {ts.name} ({ts}): pip install 'stitchkit[dicom]' "
                    "(pylibjpeg with its libjpeg and openjpeg plugins)"
                ) from None
            raise InputFailure(f"cannot decode {ts.name} pixel data ({message})") from None
        raise InputFailure(f"DICOM pixel data cannot be read ({message})") from None
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 8)) or 8)
    if photometric in ("MONOCHROME1", "MONOCHROME2"):
        values, how = _grey(arr, ds, bits, grey_range)
        if photometric == "MONOCHROME1":
            values, how = 1.0 - values, how + ", inverted"
        image = Image.fromarray(np.rint(values * 255).astype(np.uint8), "L")
        return image, f"DICOM {photometric} {bits}-bit: {how}"
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        # The palette is the file's own presentation: its entries (8 or 16 bits) are colours.
        rgb = apply_color_lut(arr, ds)
        depth = 16 if rgb.dtype.itemsize > 1 else 8
        rgb8 = rgb if depth == 8 else np.rint(to_unit(rgb, 0, 2**16 - 1) * 255)
        return Image.fromarray(rgb8.astype(np.uint8), "RGB"), f"DICOM PALETTE COLOR {depth}-bit: palette LUT (file)"
    if not (photometric == "RGB" or photometric.startswith("YBR")):
        raise InputFailure(f"DICOM photometric interpretation {photometric} is not supported")
    # pydicom returns YBR data converted to RGB; deeper samples follow the grey-range rule over
    # all three channels together (VOI does not apply to colour).
    if bits <= 8:
        return Image.fromarray(np.asarray(arr).astype(np.uint8), "RGB"), f"DICOM {photometric} {bits}-bit: stored range"
    rgb = np.asarray(arr, dtype=np.float64)
    lo, hi = image_range(rgb) if grey_range == "image" else (0.0, float(2**bits - 1))
    rgb8 = np.rint(to_unit(rgb, lo, hi) * 255).astype(np.uint8)
    return Image.fromarray(rgb8, "RGB"), f"DICOM {photometric} {bits}-bit: {KIND[grey_range]}"


def _grey(arr: np.ndarray, ds: Any, bits: int, grey_range: str) -> tuple[np.ndarray, str]:
    """Modality LUT then VOI; values in 0..1 and a description of what was applied."""
    from pydicom.pixels import apply_modality_lut

    steps = []
    modality = apply_modality_lut(arr, ds)
    x = modality.astype(np.float64)
    if "ModalityLUTSequence" in ds:
        steps.append("modality LUT")
    elif float(ds.get("RescaleSlope", 1) or 1) != 1 or float(ds.get("RescaleIntercept", 0) or 0) != 0:
        steps.append("rescale")
    if "VOILUTSequence" in ds and len(ds.VOILUTSequence):
        lut = ds.VOILUTSequence[0]
        out_bits = int(lut.LUTDescriptor[2])
        y = _voi_lut(modality, lut, ds) / float(2**out_bits - 1)
        return np.clip(y, 0, 1), ", ".join([*steps, "VOI LUT (file)"])
    window = _window(ds)
    if window is not None:
        center, width, function = window
        return _apply_window(x, center, width, function), ", ".join([*steps, f"window (file, {function.lower()})"])
    if grey_range == "image" and bits > 8:
        lo_v, hi_v = image_range(x)
    else:  # the nominal stored range; 8 bits or fewer always (as an 8-bit PNG is taken as stored)
        signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
        lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
        ends = apply_modality_lut(np.array([lo, hi], dtype=arr.dtype if arr.dtype.kind in "iu" else np.int64), ds)
        lo_v, hi_v = float(np.min(ends)), float(np.max(ends))
        grey_range = "stored"
    return to_unit(x, lo_v, hi_v), ", ".join([*steps, KIND[grey_range]])


def _voi_lut(values: np.ndarray, lut: Any, ds: Any) -> np.ndarray:
    """PS3.3 C.11.2.1.1. Not pydicom's apply_voi: 3.0 indexes with the LUT's own dtype, so
    with an 8-bit LUT every input above 255 wraps around."""
    entries, first, _ = (int(v) for v in lut.LUTDescriptor)
    entries = entries or 65536
    data = lut.LUTData
    if isinstance(data, bytes):  # VR OW: raw words in the file's byte order
        ts = getattr(ds, "file_meta", None) and ds.file_meta.get("TransferSyntaxUID")
        big = ts is not None and not ts.is_little_endian
        table = np.frombuffer(data, dtype=">u2" if big else "<u2")[:entries].astype(np.float64)
    else:
        table = np.asarray(data if hasattr(data, "__len__") else [data], dtype=np.float64)
    # The LUT is indexed by integers: rescaled (float) values are rounded first.
    index = np.clip(np.rint(values).astype(np.int64) - first, 0, len(table) - 1)
    return table[index]


def _window(ds: Any) -> tuple[float, float, str] | None:
    if "WindowCenter" not in ds or "WindowWidth" not in ds:
        return None

    def first(value: Any) -> float:
        return float(value[0] if hasattr(value, "__len__") and not isinstance(value, str) else value)

    try:
        center, width = first(ds.WindowCenter), first(ds.WindowWidth)
    except (TypeError, ValueError, IndexError):
        return None
    function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
    if function not in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
        function = "LINEAR"
    if width <= 0 or (function == "LINEAR" and width < 1):
        return None  # an invalid window: the grey-range rule is the honest fallback
    return center, width, function


def _apply_window(x: np.ndarray, c: float, w: float, function: str) -> np.ndarray:
    """PS3.3 C.11.2.1.2 with output 0..1."""
    if function == "LINEAR_EXACT":
        y = (x - c) / w + 0.5
    elif function == "SIGMOID":
        y = 1.0 / (1.0 + np.exp(-4.0 * (x - c) / w))
    elif w == 1:
        y = (x > c - 0.5).astype(np.float64)
    else:
        y = (x - (c - 0.5)) / (w - 1) + 0.5
    return np.clip(y, 0, 1)


FORMAT = InputFormat(
    "dicom", "DICOM files (.dcm, .dicom, or no extension with the DICM preamble) in a folder, a manifest "
    "or .tar shards; `--dicom-tags` copies StudyInstanceUID into groups", "DICOM files",
    options=("dicom_tags", "grey_range"), ray=True, groups=True,
)

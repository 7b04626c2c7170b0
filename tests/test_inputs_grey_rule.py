"""One rule for grey levels deeper than 8 bits (issue 20): the file's VOI LUT, else its window,
else the image's own range (default) or the nominal stored range (``--grey-range stored``).

Every case is checked against an 8-bit PNG that this file makes by applying the same rule itself
(min..max stretch in numpy, the PS3.3 C.11.2.1.2 window formula, the LUT indexed directly), and
the lite0 embeddings of the two must agree (cosine >= 0.999). All images go through one
`embed_store` run; the inputs are one real Kermany chest X-ray written as DICOM / 16-bit PNG,
and the single-frame DICOM files pydicom ships that decode without plugins.
"""

from __future__ import annotations

import csv
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from stitchkit.errors import UsageError
from stitchkit.inputs import decode_dicom, load_file, load_item, read_inputs

from .test_inputs_dicom import write_dicom

pydicom = pytest.importorskip("pydicom")
from pydicom.data import get_testdata_file  # noqa: E402
from pydicom.dataset import Dataset  # noqa: E402
from pydicom.pixels import apply_color_lut, apply_modality_lut  # noqa: E402

GAMMA = 0.7  # the VOI LUT written into one file: a gamma curve, so it is not the identity
# pydicom's own single-frame files, decodable by pydicom alone (uncompressed, deflated, RLE)
PYDICOM_GREY = ["CT_small.dcm", "MR_small.dcm", "examples_overlay.dcm", "rtdose_1frame.dcm",
                "liver_1frame.dcm", "image_dfl.dcm"]
PYDICOM_COLOUR = ["examples_rgb_color.dcm", "SC_rgb_rle_16bit.dcm", "examples_palette.dcm",
                  "SC_ybr_full_422_uncompressed.dcm"]
PYDICOM_FAILING = {"rtdose.dcm": "multi-frame DICOM (15 frames)",
                   "SC_rgb_rle_2frame.dcm": "multi-frame DICOM (2 frames)",
                   "MR_truncated.dcm": "DICOM pixel data cannot be read"}


# The rules, written here independently of stitchkit/inputs.

def stretch(x: np.ndarray) -> np.ndarray:
    """Image range: min..max -> 0..1."""
    x = x.astype(np.float64)
    return (x - x.min()) / (x.max() - x.min())


def linear_window(x: np.ndarray, c: float, w: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1, VOI LUT Function LINEAR, output 0..1."""
    x = x.astype(np.float64)
    return np.select([x <= c - 0.5 - (w - 1) / 2, x > c - 0.5 + (w - 1) / 2],
                     [0.0, 1.0], (x - (c - 0.5)) / (w - 1) + 0.5)


def first(value) -> float:
    """The first of a multi-valued WindowCenter/Width."""
    return float(value[0]) if isinstance(value, Sequence) else float(value)


def to8(y: np.ndarray) -> np.ndarray:
    return np.rint(y * 255).astype(np.uint8)


def expected_of_pydicom_file(path: Path) -> np.ndarray:
    """The 8-bit image the rule gives one of pydicom's files (modality and colour LUTs by pydicom)."""
    ds = pydicom.dcmread(path)
    arr, photometric, bits = ds.pixel_array, ds.PhotometricInterpretation, ds.BitsStored
    if photometric.startswith("MONOCHROME"):
        x = apply_modality_lut(arr, ds).astype(np.float64)
        if "WindowCenter" in ds:
            assert ds.get("VOILUTFunction", "LINEAR") == "LINEAR"
            y = linear_window(x, first(ds.WindowCenter), first(ds.WindowWidth))
        elif bits > 8:
            y = stretch(x)
        else:  # 8 bits or fewer: as stored, like an 8-bit PNG (these files have no rescale)
            assert "RescaleSlope" not in ds and "ModalityLUTSequence" not in ds
            y = arr / (2**bits - 1)
        return to8(1 - y if photometric == "MONOCHROME1" else y)
    if photometric == "PALETTE COLOR":
        return to8(apply_color_lut(arr, ds) / 65535)  # the palette's 16-bit entries are colours
    return to8(stretch(arr)) if bits > 8 else arr.astype(np.uint8)  # RGB (YBR: RGB by pydicom)


@pytest.fixture(scope="module")
def grey(data: Path) -> np.ndarray:
    """One real 8-bit chest X-ray (the first test image of labels.csv)."""
    root = data / "kermany-pneumonia-224"
    with open(root / "labels.csv", newline="") as fh:
        row = next(r for r in csv.DictReader(fh) if r["split"] == "test")
    return np.asarray(Image.open(root / row["path"]).convert("L"))


def written_cases(g: np.ndarray, folder: Path) -> dict[str, tuple[str, np.ndarray]]:
    """DICOM files written from ``g``: name -> (expected mapping kind, expected 8-bit image)."""
    g16 = g.astype(np.uint16)
    cases: dict[str, tuple[str, np.ndarray]] = {}

    def case(name: str, kind: str, expected: np.ndarray, stored: np.ndarray, **kw) -> Path:
        cases[name] = (f"DICOM {kw.get('photometric', 'MONOCHROME2')} {kw.get('bits', 16)}-bit: {kind}", expected)
        return write_dicom(folder / f"{name}.dcm", stored, **kw)

    # 8 bits allocated and stored: as stored (the nominal 0..255), as an 8-bit PNG.
    case("m2_8bit", "stored range", g, g, bits=8, allocated=8)
    case("m1_8bit", "stored range, inverted", g, 255 - g, bits=8, allocated=8, photometric="MONOCHROME1")
    # 12-bit, rescale 0.125 / -125, stored 1000..3040 at most: modality values = g, nowhere near
    # the nominal range (-125..386.875), so the image range stretches g itself.
    stored12 = 1000 + 8 * g16
    modality12 = 0.125 * stored12 - 125
    case("m2_12bit_rescale", "rescale, image range", to8(stretch(modality12)), stored12,
         bits=12, slope=0.125, intercept=-125)
    inverted12 = 1000 + 8 * (255 - g16)
    case("m1_12bit_rescale", "rescale, image range, inverted", to8(1 - stretch(0.125 * inverted12 - 125)),
         inverted12, bits=12, slope=0.125, intercept=-125, photometric="MONOCHROME1")
    case("m1_12bit_rescale_window", "rescale, window (file, linear), inverted",
         to8(1 - linear_window(0.125 * inverted12 - 125, 120, 200)), inverted12,
         bits=12, slope=0.125, intercept=-125, photometric="MONOCHROME1", window=(120, 200))
    # 16-bit, 1,000..26,500 of 0..65,535 (as a 12-14 bit detector writes it).
    wide = 1000 + 100 * g16
    case("m2_16bit_partial", "image range", to8(stretch(wide)), wide)
    case("m2_16bit_window", "window (file, linear)", to8(linear_window(wide, 9000, 12000)), wide,
         window=(9000, 12000))
    # A VOI LUT wins over the window beside it.
    path = case("m2_12bit_voi_lut", "VOI LUT (file)", np.rint(255 * (16 * g16 / 4095) ** GAMMA).astype(np.uint8),
                16 * g16, bits=12, window=(100, 50))
    ds = pydicom.dcmread(path)
    item = Dataset()
    item.add_new(0x00283002, "US", [4096, 0, 8])  # LUTDescriptor: 4096 entries from 0, 8-bit out
    item.add_new(0x00283006, "US", [round(255 * (v / 4095) ** GAMMA) for v in range(4096)])  # LUTData
    ds.VOILUTSequence = [item]
    ds.save_as(path)
    return cases


@pytest.fixture(scope="module")
def embedded(grey: np.ndarray, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Every case and its reference PNG in one folder, embedded by lite0 in one run."""
    from stitchkit.embed import embed_store
    from stitchkit.encoders import load_encoder
    from stitchkit.store import EmbeddingStore

    folder = tmp_path_factory.mktemp("grey-rule")
    cases = written_cases(grey, folder)
    for name in [*PYDICOM_GREY, *PYDICOM_COLOUR, *PYDICOM_FAILING]:
        shutil.copy(get_testdata_file(name), folder / f"pydicom_{name}")
        if name not in PYDICOM_FAILING:
            cases[f"pydicom_{Path(name).stem}"] = ("", expected_of_pydicom_file(folder / f"pydicom_{name}"))
    wide = (1000 + 100 * grey.astype(np.uint16)).astype(np.uint16)
    Image.fromarray(wide).save(folder / "png16.png")  # the same values as m2_16bit_partial.dcm
    cases["png16"] = ("16-bit PNG: image range", to8(stretch(wide)))
    for name, (_, expected) in cases.items():
        Image.fromarray(expected).save(folder / f"{name}.ref.png")
    out = folder / "all.h5"
    encoder = load_encoder("lite0")
    embed_store(read_inputs(folder), encoder, out, workers=0,
                on_failure=lambda *_: None)  # the failed table is checked below
    with EmbeddingStore(out) as store:
        e = store.embeddings[()]
        emb = dict(zip(store.ids, e / np.linalg.norm(e, axis=1, keepdims=True), strict=True))
    with h5py.File(out) as h5:
        failed = dict(zip((i.decode() for i in h5["failed/ids"][()]),
                          (r.decode() for r in h5["failed/reasons"][()]), strict=True))
        mapping = h5.attrs["pixel_mapping"]
    return {"folder": folder, "cases": cases, "emb": emb, "failed": failed, "mapping": mapping,
            "encoder": encoder, "out": out}


def _cosine(embedded: dict, a: str, b: str) -> float:
    return float(embedded["emb"][a] @ embedded["emb"][b])


@pytest.mark.slow
def test_each_file_embeds_as_the_png_its_rule_gives(embedded):
    """Written DICOMs (8/12/16-bit, MONOCHROME1/2, rescale, window, VOI LUT), pydicom's grey and
    colour files and a 16-bit PNG: decoded pixels within one grey level of the rule applied
    here, and embeddings equal to the reference PNG's."""
    folder, cosines = embedded["folder"], {}
    for name, (kind, expected) in embedded["cases"].items():
        source = next(p for p in folder.iterdir() if p.stem == name or p.name == f"{name}.dcm")
        image, how = load_file(source)
        assert np.abs(np.asarray(image).astype(int) - expected.astype(int)).max() <= 1, name
        if kind:
            assert how == kind, name
        cosines[name] = _cosine(embedded, source.name, f"{name}.ref.png")
    assert len(cosines) == 8 + len(PYDICOM_GREY) + len(PYDICOM_COLOUR) + 1
    assert min(cosines.values()) >= 0.999, cosines


@pytest.mark.slow
def test_sixteen_bit_png_and_dicom_of_the_same_values_embed_alike(embedded):
    assert _cosine(embedded, "png16.png", "m2_16bit_partial.dcm") >= 0.999


@pytest.mark.slow
def test_multi_frame_and_undecodable_files_fail_with_a_one_line_reason(embedded):
    failed = embedded["failed"]
    assert set(failed) == {f"pydicom_{n}" for n in PYDICOM_FAILING}
    for name, reason in PYDICOM_FAILING.items():
        text = failed[f"pydicom_{name}"]
        assert reason in text and "\n" not in text, text


@pytest.mark.slow
def test_the_store_counts_the_rule_each_file_took(embedded):
    import json

    mapping = json.loads(embedded["mapping"])
    assert mapping["grey_range"] == "image"
    counts = mapping["counts"]
    for name, (kind, _) in embedded["cases"].items():
        if kind:
            assert counts[kind] >= 1, (name, counts)
    assert counts["8-bit as stored"] == len(embedded["cases"])  # the reference PNGs
    assert counts["DICOM MONOCHROME2 16-bit: rescale, image range"] == 1  # CT_small
    assert counts["DICOM MONOCHROME2 32-bit: image range"] == 1  # rtdose_1frame
    assert counts["DICOM PALETTE COLOR 16-bit: palette LUT (file)"] == 1
    assert sum(counts.values()) == 2 * len(embedded["cases"])


@pytest.mark.slow
def test_a_store_made_by_one_rule_is_not_taken_for_the_other(embedded):
    from stitchkit.embed import embed_store

    folder, encoder, out = embedded["folder"], embedded["encoder"], embedded["out"]
    assert embed_store(read_inputs(folder), encoder, out).already_complete
    with pytest.raises(UsageError, match="holds another embedding run"):
        embed_store(read_inputs(folder, grey_range="stored"), encoder, out)


def test_stored_range_is_the_nominal_range_through_the_rescale(grey, tmp_path):
    """``--grey-range stored`` is the rule before issue 20: 0..4095 through the rescale."""
    stored = 1000 + 8 * grey.astype(np.uint16)
    path = write_dicom(tmp_path / "a.dcm", stored, bits=12, slope=0.125, intercept=-125)
    image, how = decode_dicom(path, "stored")
    lo, hi = -125.0, 0.125 * 4095 - 125
    assert np.array_equal(np.asarray(image), to8((0.125 * stored - 125 - lo) / (hi - lo)))
    assert how == "DICOM MONOCHROME2 12-bit: rescale, stored range"
    # The same choice reaches the decoder through the listing, as --dicom-tags does.
    inputs = read_inputs(tmp_path, grey_range="stored")
    assert inputs.grey_range == "stored" and load_item(inputs.items[0])[1] == how
    assert load_item(read_inputs(tmp_path).items[0])[1] == "DICOM MONOCHROME2 12-bit: rescale, image range"
    with pytest.raises(UsageError, match="--grey-range 'nominal'"):
        read_inputs(tmp_path, grey_range="nominal")


def test_a_constant_image_is_black_not_a_division_by_zero(tmp_path):
    """max == min: the image range maps it to 0 (see `stitchkit.inputs.grey.to_unit`)."""
    flat = np.full((16, 16), 2000, dtype=np.uint16)
    dicom = write_dicom(tmp_path / "flat.dcm", flat, bits=12, slope=0.125, intercept=-125)
    Image.fromarray(flat).save(tmp_path / "flat.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning from a 0/0
        for path in (dicom, tmp_path / "flat.png"):
            image, how = load_file(path)
            assert np.asarray(image).max() == 0 and how.endswith("image range"), how
        stored, _ = decode_dicom(dicom, "stored")  # 2000 of 0..4095 keeps its grey
        assert np.asarray(stored).min() == np.asarray(stored).max() == round(2000 / 4095 * 255)


def test_the_option_is_on_stitch_embed_with_image_as_default():
    from stitchkit.cli.main import cli

    res = CliRunner().invoke(cli, ["embed", "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0
    help_text = " ".join(res.output.split())
    assert "--grey-range [image|stored]" in help_text and "[default: image]" in help_text
    assert "--grey-range stored" in help_text  # the example
    bad = CliRunner().invoke(cli, ["embed", "x", "-m", "lite0", "-o", "x.h5", "--grey-range", "full"])
    assert bad.exit_code == 2

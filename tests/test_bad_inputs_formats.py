"""The bad-input grid for the formats of issue 14: tar shards and DICOM.

Same contract as tests/test_bad_inputs.py: a bad sample goes to the failed table with a reason
(or, under ``--strict``, exit 2 with one ``error:`` line: bad input is a usage error); a bad input as a whole is exit 2
with one line; never a traceback; no store is left behind by a refused run.
"""

from __future__ import annotations

import io
import shutil
import sys
import tarfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from faults.helpers import Result, run_inprocess  # noqa: E402

from .test_inputs_dicom import write_dicom  # noqa: E402

pydicom = pytest.importorskip("pydicom")
from pydicom.data import get_testdata_file  # noqa: E402


def _one_error_line(result: Result, code: int, pattern: str) -> None:
    assert result.code == code, (result.code, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.message_lines
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert pattern in lines[0], lines[0]


def _failed(store: Path) -> dict[str, str]:
    with h5py.File(store) as h5:
        if "failed" not in h5:
            return {}
        return {i.decode(): r.decode() for i, r in zip(h5["failed/ids"][()], h5["failed/reasons"][()], strict=True)}


@pytest.fixture(scope="module")
def xray(data: Path) -> np.ndarray:
    path = sorted((data / "kermany-pneumonia-224" / "test" / "NORMAL").iterdir())[0]
    return np.asarray(Image.open(path).convert("L"))


@pytest.fixture(scope="module")
def dicom_folder(xray: np.ndarray, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One good DICOM and every kind of bad one."""
    folder = tmp_path_factory.mktemp("bad-dicoms")
    write_dicom(folder / "good.dcm", xray.astype(np.uint16) * 257)
    no_pixels = write_dicom(folder / "no-pixels.dcm", xray.astype(np.uint16) * 257)
    ds = pydicom.dcmread(no_pixels)
    del ds.PixelData
    ds.save_as(no_pixels)
    (folder / "empty.dcm").write_bytes(b"")
    (folder / "noise.dcm").write_bytes(np.random.default_rng(0).bytes(4096))
    shutil.copy(get_testdata_file("rtdose.dcm"), folder / "multi-frame.dcm")
    shutil.copy(get_testdata_file("test-SR.dcm"), folder / "report.dcm")
    return folder


def _add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def tars(xray: np.ndarray, dicom_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bad-tars")
    png = io.BytesIO()
    Image.fromarray(xray).save(png, format="PNG")
    good = {"a.png": png.getvalue(), "b.dcm": (dicom_folder / "good.dcm").read_bytes(),
            "c.jpg": b"not a jpeg at all", "d.png": png.getvalue()}
    out = {}
    with tarfile.open(folder / "ok.tar", "w") as tf:
        for name, data in good.items():
            _add(tf, name, data)
            _add(tf, name.split(".")[0] + ".cls", b"normal")
    whole = (folder / "ok.tar").read_bytes()
    # Cut inside d.png's data: a, b and c are whole, d is short, the end-of-archive is gone.
    cut = whole.index(png.getvalue()[:64], whole.index(b"d.png")) + 100
    (folder / "truncated.tar").write_bytes(whole[:cut])
    with tarfile.open(folder / "escape.tar", "w") as tf:
        _add(tf, "a.png", png.getvalue())
        _add(tf, "../../etc/evil.png", png.getvalue())
    (folder / "garbage.tar").write_bytes(np.random.default_rng(1).bytes(2048))
    out.update({p.stem: p for p in folder.iterdir()})
    return out


def test_bad_dicoms_go_to_the_failed_table_with_reasons(dicom_folder: Path, tmp_path: Path):
    result = run_inprocess("embed", dicom_folder, "-m", "lite0", "-o", tmp_path / "o.h5", "--workers", "0")
    assert result.code == 0, result.stderr
    assert "Traceback" not in result.stderr
    reasons = _failed(tmp_path / "o.h5")
    assert set(reasons) == {"no-pixels.dcm", "empty.dcm", "noise.dcm", "multi-frame.dcm", "report.dcm"}
    assert reasons["no-pixels.dcm"].startswith("DICOM without pixel data (Digital X-Ray Image Storage")
    assert reasons["report.dcm"] == "DICOM without pixel data (Comprehensive SR Storage): not an image"
    assert reasons["empty.dcm"] == "empty file (0 bytes)"
    assert reasons["multi-frame.dcm"].startswith("multi-frame DICOM (15 frames)")
    assert "DICOM" in reasons["noise.dcm"]
    with h5py.File(tmp_path / "o.h5") as h5:
        assert [i.decode() for i in h5["ids"][()]] == ["good.dcm"]


@pytest.mark.parametrize("name, pattern", [
    ("no-pixels.dcm", "DICOM without pixel data"), ("empty.dcm", "empty file (0 bytes)"),
    ("multi-frame.dcm", "multi-frame DICOM"), ("report.dcm", "Comprehensive SR"),
])
def test_strict_stops_at_a_bad_dicom_in_one_line(dicom_folder: Path, tmp_path: Path, name: str, pattern: str):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(dicom_folder / "good.dcm", folder)
    shutil.copy(dicom_folder / name, folder)
    result = run_inprocess("embed", folder, "-m", "lite0", "-o", tmp_path / "o.h5", "--strict", "--workers", "0")
    _one_error_line(result, 2, pattern)
    assert not (tmp_path / "o.h5").exists()


def test_truncated_tar_keeps_whole_members_and_fails_the_cut_one(tars: dict[str, Path], tmp_path: Path):
    # --grey-range stored: b.dcm holds 257 x the PNG's pixels, which the nominal range gives back.
    result = run_inprocess("embed", tars["truncated"], "-m", "lite0", "-o", tmp_path / "o.h5", "--workers", "0",
                           "--grey-range", "stored")
    assert result.code == 0, result.stderr
    assert "Traceback" not in result.stderr
    reasons = _failed(tmp_path / "o.h5")
    assert reasons["c"].startswith("not an image")  # the corrupt member
    assert "cut short" in reasons["d"]  # the truncated one
    with h5py.File(tmp_path / "o.h5") as h5:
        assert [i.decode() for i in h5["ids"][()]] == ["a", "b"]  # b is the .dcm member
        a, b = h5["embeddings"][()]
        assert float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) >= 0.995  # same pixels, PNG vs DICOM
    strict = run_inprocess("embed", tars["truncated"], "-m", "lite0", "-o", tmp_path / "s.h5", "--strict")
    _one_error_line(strict, 2, "not an image")


def test_a_member_escaping_the_folder_refuses_the_shard(tars: dict[str, Path], tmp_path: Path):
    result = run_inprocess("embed", tars["escape"], "-m", "lite0", "-o", tmp_path / "o.h5")
    _one_error_line(result, 2, "escapes the archive folder")
    assert not (tmp_path / "o.h5").exists()


def test_a_file_that_is_not_a_tar_is_a_usage_error(tars: dict[str, Path], tmp_path: Path):
    result = run_inprocess("embed", tars["garbage"], tars["ok"], "-m", "lite0", "-o", tmp_path / "o.h5")
    _one_error_line(result, 2, "is not a readable uncompressed tar")


def test_mixed_inputs_and_bad_flags_are_usage_errors(tars: dict[str, Path], dicom_folder: Path, tmp_path: Path):
    _one_error_line(run_inprocess("embed", tars["ok"], dicom_folder, "-m", "lite0", "-o", tmp_path / "o.h5"),
                    2, "several inputs must all be .tar shards")
    _one_error_line(run_inprocess("embed", tars["ok"], "-m", "lite0", "-o", tmp_path / "o.h5", "--label-from", "xml"),
                    2, "use cls, txt or json:FIELD")
    _one_error_line(run_inprocess("embed", dicom_folder, "-m", "lite0", "-o", tmp_path / "o.h5",
                                  "--dicom-tags", "PatientName"), 2, "never copied")
    _one_error_line(run_inprocess("embed", tars["ok"], "-m", "lite0", "-o", tmp_path / "o.h5", "--shard", "1/2"),
                    2, "only 1 tar shards")

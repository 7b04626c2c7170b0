"""Local Hugging Face datasets (save_to_disk folders and Parquet) of real Kermany images."""

from __future__ import annotations

import csv
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from stitchkit.errors import UsageError
from stitchkit.inputs import load_item, read_inputs

datasets = pytest.importorskip("datasets")  # in the dev extra: it only writes the test folders
NAMES = ["normal", "pneumonia"]


@pytest.fixture(scope="module")
def rows(data: Path) -> list[dict[str, str]]:
    with open(data / "kermany-pneumonia-224" / "labels.csv", newline="") as fh:
        test = [r for r in csv.DictReader(fh) if r["split"] == "test"]
    return test[:4] + test[-4:]


@pytest.fixture(scope="module")
def hf_dataset(rows, data: Path, tmp_path_factory: pytest.TempPathFactory):
    root = data / "kermany-pneumonia-224"
    features = datasets.Features({
        "id": datasets.Value("string"), "image": datasets.Image(),
        "label": datasets.ClassLabel(names=NAMES), "report": datasets.Value("string"),
    })
    ds = datasets.Dataset.from_dict({
        "id": [r["path"] for r in rows],
        "image": [str(root / r["path"]) for r in rows],
        "label": [NAMES.index(r["label"]) for r in rows],
        "report": [f"findings: {r['label']}" for r in rows],
    }, features=features)
    out = tmp_path_factory.mktemp("hf")
    ds.save_to_disk(str(out / "disk"))
    ds.to_parquet(str(out / "data.parquet"))
    datasets.DatasetDict({"train": ds, "test": ds}).save_to_disk(str(out / "dict"))
    return out


def test_save_to_disk_folder_lists_ids_labels_and_texts(hf_dataset, rows, data):
    from stitchkit.inputs import Columns

    inputs = read_inputs(hf_dataset / "disk", columns=Columns(text="report"))
    assert [it.id for it in inputs.items] == [r["path"] for r in rows]
    assert [it.label for it in inputs.items] == [r["label"] for r in rows]  # ClassLabel names
    assert inputs.items[0].text == f"findings: {rows[0]['label']}"
    assert inputs.modality == "image" and inputs.columns == ["label", "text"]
    image, _ = load_item(inputs.items[5])
    original = Image.open(data / "kermany-pneumonia-224" / rows[5]["path"])
    assert np.array_equal(np.asarray(image), np.asarray(original))  # the bytes are the JPEG's own


def test_parquet_file_reads_the_same(hf_dataset, rows, data):
    inputs = read_inputs(hf_dataset / "data.parquet")
    assert [it.label for it in inputs.items] == [r["label"] for r in rows]
    image, _ = load_item(inputs.items[2])
    original = Image.open(data / "kermany-pneumonia-224" / rows[2]["path"])
    assert np.array_equal(np.asarray(image), np.asarray(original))


def test_a_dataset_dict_asks_for_a_split(hf_dataset):
    with pytest.raises(UsageError, match=r"several splits \(train, test\)"):
        read_inputs(hf_dataset / "dict")
    assert len(read_inputs(hf_dataset / "dict" / "test").items) == 8


def test_a_wrong_image_column_is_refused(hf_dataset):
    from stitchkit.inputs import Columns

    with pytest.raises(UsageError, match="'report' is not an image column"):
        read_inputs(hf_dataset / "disk", columns=Columns(image="report"))


@pytest.mark.slow
def test_embedding_a_dataset_equals_embedding_the_files(hf_dataset, rows, data, tmp_path):
    from .conftest import run_stitch

    manifest = tmp_path / "m.csv"
    with open(manifest, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "path"])
        w.writerows([r["path"], data / "kermany-pneumonia-224" / r["path"]] for r in rows)
    for src, out in ((hf_dataset / "disk", "d.h5"), (manifest, "f.h5")):
        done = run_stitch("embed", src, "-m", "lite0", "-o", tmp_path / out, "--workers", "1")
        assert done.returncode == 0, done.stderr
    with h5py.File(tmp_path / "d.h5") as d, h5py.File(tmp_path / "f.h5") as f:
        assert np.array_equal(d["ids"][()], f["ids"][()])
        assert np.allclose(d["embeddings"][()], f["embeddings"][()], atol=1e-5)
        assert [x.decode() for x in d["labels"][()]] == [r["label"] for r in rows]

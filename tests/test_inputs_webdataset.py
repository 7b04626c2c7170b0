"""WebDataset tar shards made from real Kermany images, the way img2dataset lays them out."""

from __future__ import annotations

import csv
import io
import json
import tarfile
from pathlib import Path

import h5py
import numpy as np
import pytest

from stitchkit.embed import select_shard
from stitchkit.errors import UsageError
from stitchkit.inputs import load_item, read_inputs
from stitchkit.inputs.webdataset import expand_braces

PER_SHARD = 6


def _add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


def kermany_rows(data: Path, n: int) -> list[dict[str, str]]:
    with open(data / "kermany-pneumonia-224" / "labels.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == "test"]
    return rows[:n // 2] + rows[-(n - n // 2):]  # both classes


def write_shards(data: Path, folder: Path, shards: int = 2, per_shard: int = PER_SHARD) -> list[dict]:
    """``folder/0000{i}.tar`` with .jpg, .cls, .txt and .json per sample; returns the samples."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = kermany_rows(data, shards * per_shard)
    samples = []
    for s in range(shards):
        with tarfile.open(folder / f"{s:05d}.tar", "w") as tf:
            for j, row in enumerate(rows[s * per_shard : (s + 1) * per_shard]):
                key = f"{s:05d}{j:04d}"
                path = data / "kermany-pneumonia-224" / row["path"]
                caption = f"a chest x-ray, {row['label']}"
                _add(tf, f"{key}.jpg", path.read_bytes())
                _add(tf, f"{key}.cls", row["label"].encode())
                _add(tf, f"{key}.txt", caption.encode())
                _add(tf, f"{key}.json", json.dumps({"finding": row["label"], "src": row["path"]}).encode())
                samples.append({"key": key, "path": path, "label": row["label"], "caption": caption})
    return samples


@pytest.fixture(scope="module")
def shards(data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    folder = tmp_path_factory.mktemp("wds")
    return folder, write_shards(data, folder)


def test_brace_patterns_expand_like_the_shell():
    assert expand_braces("s/{000..002}.tar") == ["s/000.tar", "s/001.tar", "s/002.tar"]
    assert expand_braces("{a,b}/{8..10}.tar") == ["a/8.tar", "a/9.tar", "a/10.tar", "b/8.tar", "b/9.tar", "b/10.tar"]
    with pytest.raises(UsageError, match="braces hold a range"):
        expand_braces("s/{x}.tar")


def test_keys_labels_and_texts_from_the_members(shards):
    folder, samples = shards
    inputs = read_inputs(str(folder / "{00000..00001}.tar"))
    assert [it.id for it in inputs.items] == [s["key"] for s in samples]
    assert [it.label for it in inputs.items] == [s["label"] for s in samples]  # .cls, without a flag
    assert [it.text for it in inputs.items] == [s["caption"] for s in samples]
    assert inputs.columns == ["label", "text"] and inputs.modality == "image"
    by_json = read_inputs([folder / "00000.tar", folder / "00001.tar"], label_from="json:finding")
    assert [it.label for it in by_json.items] == [s["label"] for s in samples]
    by_txt = read_inputs(folder / "00000.tar", label_from="txt")
    assert by_txt.items[0].label == samples[0]["caption"]
    image, how = load_item(inputs.items[3])
    from PIL import Image

    assert np.array_equal(np.asarray(image), np.asarray(Image.open(samples[3]["path"])))
    assert how == "8-bit as stored"


def test_label_from_a_missing_json_field_fails_those_samples(shards):
    folder, _ = shards
    inputs = read_inputs(folder / "00000.tar", label_from="json:nope")
    assert all("has no field 'nope'" in (it.error or "") for it in inputs.items)
    with pytest.raises(UsageError, match="use cls, txt or json:FIELD"):
        read_inputs(folder / "00000.tar", label_from="xml")


def test_shard_i_of_n_splits_by_tar(shards):
    folder, samples = shards
    inputs = read_inputs(str(folder / "{00000..00001}.tar"))
    first = select_shard(inputs.items, (0, 2), by_file=inputs.shard_by_file)
    second = select_shard(inputs.items, (1, 2), by_file=inputs.shard_by_file)
    assert [it.id for it in first] == [s["key"] for s in samples[:PER_SHARD]]
    assert [it.id for it in second] == [s["key"] for s in samples[PER_SHARD:]]
    with pytest.raises(UsageError, match="only 2 tar shards"):
        select_shard(inputs.items, (0, 3), by_file=True)


def test_a_missing_shard_in_the_pattern_is_named(shards):
    folder, _ = shards
    with pytest.raises(UsageError, match="1 of 3 shards do not exist"):
        read_inputs(str(folder / "{00000..00002}.tar"))


@pytest.mark.slow
def test_embedding_shards_equals_embedding_the_files(shards, tmp_path):
    """lite0 over two shards with `stitch embed` == lite0 over the same JPEGs from a manifest;
    minilm over the same shards embeds the .txt captions."""
    from .conftest import run_stitch

    folder, samples = shards
    manifest = tmp_path / "m.csv"
    with open(manifest, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "path"])
        w.writerows([s["key"], s["path"]] for s in samples)
    done = run_stitch("embed", folder / "{00000..00001}.tar", "-m", "lite0", "-o", tmp_path / "w.h5", "--workers", "1")
    assert done.returncode == 0, done.stderr
    done = run_stitch("embed", manifest, "-m", "lite0", "-o", tmp_path / "f.h5", "--workers", "0")
    assert done.returncode == 0, done.stderr
    texts = run_stitch("embed", folder / "00000.tar", folder / "00001.tar", "-m", "minilm", "-o", tmp_path / "t.h5")
    assert texts.returncode == 0, texts.stderr
    with h5py.File(tmp_path / "w.h5") as w, h5py.File(tmp_path / "f.h5") as f, h5py.File(tmp_path / "t.h5") as t:
        assert [i.decode() for i in w["ids"][()]] == [s["key"] for s in samples]
        assert np.allclose(w["embeddings"][()], f["embeddings"][()], atol=1e-5)
        assert [x.decode() for x in w["labels"][()]] == [s["label"] for s in samples]
        assert t.attrs["modality"] == "text" and t["embeddings"].shape == (len(samples), 384)
        assert [x.decode() for x in t["texts"][()]] == [s["caption"] for s in samples]


def test_dicom_members_decode_and_give_their_tags(data, tmp_path):
    from PIL import Image

    from .test_inputs_dicom import write_dicom

    png = np.asarray(Image.open(data / "kermany-pneumonia-224" / kermany_rows(data, 2)[0]["path"]).convert("L"))
    dcm = write_dicom(tmp_path / "x.dcm", png.astype(np.uint16) * 257, study="9.8.7", view="AP")
    with tarfile.open(tmp_path / "d.tar", "w") as tf:
        _add(tf, "s1.dcm", dcm.read_bytes())
    # --grey-range reaches tar members too: the nominal 16-bit range gives the PNG's pixels back.
    inputs = read_inputs(tmp_path / "d.tar", dicom_tags="StudyInstanceUID,ViewPosition", grey_range="stored")
    assert (inputs.items[0].group, inputs.items[0].extra["view_position"]) == ("9.8.7", "AP")
    image, how = load_item(inputs.items[0])
    assert np.array_equal(np.asarray(image), png) and how == "DICOM MONOCHROME2 16-bit: stored range"


def test_an_export_folder_given_as_input_points_to_import(tmp_path):
    (tmp_path / "emb" / "img_emb").mkdir(parents=True)
    with pytest.raises(UsageError, match="stitch import"):
        read_inputs(tmp_path / "emb")

"""`chexpert:FOLDER` reads CheXpert-v1.0-small as published: train.csv of real rows (as
torchxrayvision's wheel ships them), valid.csv and test_labels.csv of other real rows under valid/
and test/ names (test: Path and the 14 columns, as the test release writes them), and real NIH
images under CheXpert's file names. Expected values are computed here from the rows written."""

from __future__ import annotations

import csv
import gzip
import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

from stitchkit.inputs import read_inputs
from stitchkit.inputs.cxr.layout import shipped_file
from stitchkit.store import EmbeddingStore
from tests.faults.helpers import run_inprocess

PREFIX = "CheXpert-v1.0-small/"
LABELS = ["No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
          "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
          "Fracture", "Support Devices"]
TRAIN_PATIENTS, VALID_PATIENTS, TEST_ROWS = 14, 5, 8


def _shipped() -> tuple[list[str], list[list[str]]]:
    with gzip.open(shipped_file("chexpert_train.csv.gz"), "rt", newline="") as fh:
        rows = csv.reader(fh)
        header = next(rows)
        return header, list(rows)


def _patient(path: str) -> str:
    return path.split("/")[2]


def _rows(header: list[str], rows: list[list[str]]) -> dict[str, list[list[str]]]:
    """Real rows: train (the first patients, and the first patient with a Frontal "LL" image),
    valid (the next patients, moved to valid/ under new numbers), test (rows without -1)."""
    patients: dict[str, list[list[str]]] = {}
    for row in rows[:400]:
        patients.setdefault(_patient(row[0]), []).append(row)
    names = list(patients)
    ll = next(r for r in rows if r[header.index("AP/PA")] == "LL")
    train = [r for p in names[:TRAIN_PATIENTS] for r in patients[p]] + [r for r in rows if _patient(r[0]) == _patient(ll[0])]
    valid = [[r[0].replace("/train/", "/valid/").replace(p, f"patient{64541 + k}"), *r[1:]]
             for k, p in enumerate(names[TRAIN_PATIENTS:TRAIN_PATIENTS + VALID_PATIENTS]) for r in patients[p]]
    cut = [header.index(c) for c in LABELS]
    clean = [r for r in rows[400:] if "-1.0" not in r][:TEST_ROWS]  # the test release has no -1 and no blank
    test = [[f"test/patient{64741 + k // 2}/study1/view{k % 2 + 1}_{('frontal', 'lateral')[k % 2]}.jpg",
             *(r[i] or "0.0" for i in cut)] for k, r in enumerate(clean)]
    return {"train": train, "valid": valid, "test": test}


def expected(values: dict[str, str], uncertain: str = "ignore") -> tuple[str, str]:
    """(label, uncertain): "Pleural Effusion" is Effusion; No Finding = 1 clears every observation
    but Support Devices; a row with no positive is No Finding."""
    healthy = values["No Finding"] == "1.0"
    positive, unsure = set(), set()
    for column in LABELS[1:]:
        value = values[column]
        if healthy and column != "Support Devices":
            continue
        name = "Effusion" if column == "Pleural Effusion" else column
        if value == "1.0" or (value == "-1.0" and uncertain == "positive"):
            positive.add(name)
        elif value == "-1.0" and uncertain == "ignore":
            unsure.add(name)
    return "|".join(sorted(positive)) or "No Finding", "|".join(sorted(unsure))


def build(data: Path, root: Path, written: dict[str, list[list[str]]], header: list[str], images: Path) -> None:
    """The CSVs under ``root`` and each row's image (a real NIH PNG, decoded by content) under
    ``images`` at the row's path without its first part."""
    nih = sorted((data / "nih-pneumonia-256" / "images").rglob("*.png"))
    test_header = ["Path", *LABELS]
    for (split, rows), name in zip(written.items(), ("train.csv", "valid.csv", "test_labels.csv"), strict=True):
        with open(root / name, "w", newline="") as fh:
            csv.writer(fh).writerows([test_header if split == "test" else header, *rows])
    paths = [r[0] for rows in written.values() for r in rows]
    for k, path in enumerate(paths):
        image = images / path.removeprefix(PREFIX)
        image.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(nih[k], image)


def want(written: dict[str, list[list[str]]], header: list[str]) -> dict[str, dict[str, str]]:
    """Each image's expected id -> values, view, split, patient, study."""
    out = {}
    for split, rows in written.items():
        cols = ["Path", *LABELS] if split == "test" else header
        for row in rows:
            values = dict(zip(cols, row, strict=True))
            rel = row[0].removeprefix(PREFIX)
            if split == "test":
                view = "LATERAL" if rel.endswith("_lateral.jpg") else "FRONTAL"
            else:
                fl, appa = values["Frontal/Lateral"], values["AP/PA"]
                view = "LATERAL" if fl == "Lateral" or appa == "LL" else appa
            parts = rel.split("/")
            out[rel] = {**values, "view": view, "split": split, "patient": parts[1], "study": f"{parts[1]}/{parts[2]}"}
    return out


@pytest.fixture(scope="module")
def tree(data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict[str, str]]]:
    header, rows = _shipped()
    written = _rows(header, rows)
    root = tmp_path_factory.mktemp("chexpert") / "CheXpert-v1.0-small"
    root.mkdir()
    build(data, root, written, header, root)
    return root, want(written, header)


@pytest.mark.slow
def test_index_matches_the_rows(tree: tuple[Path, dict[str, dict[str, str]]]) -> None:
    root, rows = tree
    inputs = read_inputs(f"chexpert:{root}?views=all")
    assert [it.id for it in inputs.items] == list(rows)
    for it in inputs.items:
        row = rows[it.id]
        assert (it.label, it.extra["uncertain"]) == expected(row)
        assert it.group == row["patient"] and it.extra["study"] == row["study"]
        assert it.extra["view"] == row["view"] and it.extra["split"] == row["split"]
        assert it.path == root / it.id and it.path.exists()
    views = {r["view"] for r in rows.values()}
    assert {"PA", "AP", "LATERAL", "FRONTAL"} <= views and any(r["AP/PA"] == "LL" for r in rows.values() if "AP/PA" in r)
    assert any(it.extra["uncertain"] for it in inputs.items)
    assert any(r["No Finding"] == "1.0" and r["Support Devices"] == "1.0" for r in rows.values())


def test_paths_resolve_against_the_folder_or_its_parent(tree: tuple[Path, dict[str, dict[str, str]]],
                                                         tmp_path: Path) -> None:
    root, rows = tree
    renamed = tmp_path / "chexpert-small"  # the published folder under another name
    renamed.symlink_to(root)
    assert {it.path for it in read_inputs(f"chexpert:{renamed}?views=all").items} == {renamed / i for i in rows}
    beside = tmp_path / "beside"  # the CSVs beside the published folder
    beside.mkdir()
    for name in ("train.csv", "valid.csv"):
        (beside / name).symlink_to(root / name)
    (beside / "CheXpert-v1.0-small").symlink_to(root)
    got = {it.path for it in read_inputs(f"chexpert:{beside}?views=all").items}
    assert got == {beside / PREFIX / i for i in rows if rows[i]["split"] != "test"}


def test_options_select_rows(tree: tuple[Path, dict[str, dict[str, str]]]) -> None:
    root, rows = tree

    def ids(query: str) -> list[str]:
        return [it.id for it in read_inputs(f"chexpert:{root}?{query}").items]

    assert ids("") == [i for i, r in rows.items() if r["view"] in ("PA", "AP", "FRONTAL")]
    assert ids("views=lateral") == [i for i, r in rows.items() if r["view"] == "LATERAL"]
    assert ids("views=pa") == [i for i, r in rows.items() if r["view"] == "PA"] != []
    for split in ("train", "valid", "test"):
        assert ids(f"split={split}&views=all") == [i for i, r in rows.items() if r["split"] == split] != []
    first: dict[str, str] = {}
    for i, r in rows.items():
        if r["view"] in ("PA", "AP", "FRONTAL"):
            first.setdefault(r["study"], i)
    assert ids("per_study=first") == list(first.values())
    for rule in ("positive", "negative"):
        got = {it.id: (it.label, it.extra["uncertain"]) for it in read_inputs(f"chexpert:{root}?views=all&uncertain={rule}").items}
        assert got == {i: expected(r, rule) for i, r in rows.items()}
        assert got != {i: expected(r) for i, r in rows.items()}


def test_shipped_labels_serve_a_folder_of_images(tree: tuple[Path, dict[str, dict[str, str]]], tmp_path: Path) -> None:
    root, rows = tree
    images = tmp_path / "CheXpert-v1.0-small"  # the train images, no train.csv
    shutil.copytree(root / "train", images / "train", symlinks=True)
    got = {it.id: (it.label, it.extra["uncertain"], it.extra["split"])
           for it in read_inputs(f"chexpert:{images}?labels=torchxrayvision&views=all").items}
    assert got == {i: (*expected(r), "train") for i, r in rows.items() if r["split"] == "train"}


@pytest.mark.parametrize(("spec", "message"), [
    ("chexpert:{empty}", "train.csv is missing: give valid.csv or test_labels.csv at least"),
    ("chexpert:{valid_only}?split=train", "train.csv is missing: split=train reads it"),
    ("chexpert:{valid_only}?split=test", "test_labels.csv is missing: split=test reads it"),
    ("chexpert:{root}?text=findings", "chexpert takes views, per_study, split, uncertain, labels"),
    ("chexpert:{root}?uncertain=maybe", "uncertain='maybe' is not one of ignore, positive, negative"),
    ("chexpert:{root}?labels={empty}/train.csv", "is not a file"),
])
def test_missing_files_are_one_line(tree: tuple[Path, dict[str, dict[str, str]]], tmp_path: Path,
                                    spec: str, message: str) -> None:
    root, _ = tree
    empty, valid_only = tmp_path / "empty", tmp_path / "valid"
    empty.mkdir()
    valid_only.mkdir()
    (valid_only / "valid.csv").symlink_to(root / "valid.csv")
    res = run_inprocess("embed", spec.format(root=root, empty=empty, valid_only=valid_only), "-m", "lite0",
                        "-o", tmp_path / "x.h5")
    assert res.code == 2, res.stderr
    assert len(res.message_lines) == 1 and message in res.message_lines[0], res.stderr
    assert not (tmp_path / "x.h5").exists()


@pytest.mark.slow
def test_embed_writes_labels_groups_and_extras(data: Path, tmp_path: Path) -> None:
    header, rows = _shipped()
    written = _rows(header, rows)
    small = {"train": written["train"][:4], "valid": written["valid"][:2], "test": written["test"][:2]}
    root = tmp_path / "CheXpert-v1.0-small"
    root.mkdir()
    build(data, root, small, header, tmp_path / "links")
    for rel in want(small, header):  # real JPEGs, as CheXpert publishes them
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.open(tmp_path / "links" / rel).convert("L").save(root / rel, quality=95)
    res = run_inprocess("embed", f"chexpert:{root}?views=all", "-m", "lite0", "-o", tmp_path / "c.h5", "--workers", "0")
    assert res.code == 0, res.stderr
    with EmbeddingStore(tmp_path / "c.h5") as store:
        got = {i: tuple(v) for i, *v in zip(store.ids, store.labels, store.groups, store.column("view"),
                                            store.column("split"), store.column("uncertain"), strict=True)}
    assert got == {i: (expected(r)[0], r["patient"], r["view"], r["split"], expected(r)[1])
                   for i, r in want(small, header).items()}

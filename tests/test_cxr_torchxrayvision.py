"""Each chest X-ray reader against torchxrayvision's own loader for its dataset.

The loaders of the torchxrayvision 1.5.7 wheel (``NIH_Dataset``, ``CheX_Dataset``, …) are run on
the label files the wheel ships, and on the shared data: a reader must give their labels wherever
its module's docstring says the rule is torchxrayvision's, and differ only where the docstring
says why. The readers write those rules out (torchxrayvision keeps them as locals of each
loader's ``__init__``, behind an import of torch: `stitchkit.inputs.cxr.findings` says why);
this is what holds what they write to torchxrayvision's code rather than to a copy of it."""

from __future__ import annotations

import csv
import gzip
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from stitchkit.inputs import read_inputs
from stitchkit.inputs.cxr import chexpert, nih, openi, padchest, rsna, siim, vindr
from stitchkit.inputs.cxr.findings import FINDINGS, NO_FINDING, SEPARATOR
from stitchkit.inputs.cxr.layout import DatasetOptions, view_name
from tests.cxr_dicom import real_data, shipped

pytestmark = pytest.mark.slow  # torchxrayvision's import (torch, pandas) and its loaders: ~20 s

RENAMED = {"Pleural Effusion": "Effusion"}  # CheX_Dataset's and MIMIC_Dataset's one rename


@pytest.fixture(scope="module")
def xrv():
    """torchxrayvision.datasets, or a skip."""
    pytest.importorskip("torchxrayvision")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import torchxrayvision

    return torchxrayvision.datasets


@pytest.fixture(scope="module")
def nowhere(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The loaders' imgpath: they list it or check it exists, and read no image until indexed."""
    return str(tmp_path_factory.mktemp("no-images"))


def _per_item(loader, mask: np.ndarray) -> list[frozenset[str]]:
    """Per item, the names whose column ``mask`` marks (rows repeat few patterns: each once)."""
    names = [str(p) for p in loader.pathologies]
    known: dict[bytes, frozenset[str]] = {}
    out = []
    for row, key in zip(mask, map(bytes, np.packbits(mask, axis=1)), strict=True):
        if key not in known:
            known[key] = frozenset(n for n, m in zip(names, row, strict=True) if m)
        out.append(known[key])
    return out


def positives(loader) -> list[frozenset[str]]:
    """Per item of a loader, the names it labels 1."""
    return _per_item(loader, loader.labels == 1)


def unknowns(loader) -> list[frozenset[str]]:
    """Per item of a loader, the names it labels NaN (no information)."""
    return _per_item(loader, np.isnan(loader.labels))


def names(label: str) -> frozenset[str]:
    return frozenset() if label == NO_FINDING else frozenset(label.split(SEPARATOR))


def test_harmonised_names_are_default_pathologies(xrv) -> None:
    assert FINDINGS == tuple(xrv.default_pathologies)


def test_nih_labels_patients_and_views(xrv, nowhere: str) -> None:
    loader = xrv.NIH_Dataset(nowhere, views=["*"], unique_patients=False)
    assert set(nih.TERMS.values()) == set(loader.pathologies)
    cells = loader.csv["Finding Labels"]
    assert [names(nih.label(c)) for c in cells] == positives(loader)  # all 112,120 rows
    expected = {i: (lab, p, v) for i, lab, p, v in zip(
        loader.csv["Image Index"], positives(loader), loader.csv["patientid"], loader.csv["view"], strict=True)}
    items = read_inputs(f"nih:{real_data() / 'nih-pneumonia-256'}?labels=torchxrayvision&views=all").items
    assert len(items) == 1000
    assert {it.id: (names(it.label), it.group, it.extra["view"]) for it in items} == \
        {it.id: expected[it.id] for it in items}


@pytest.fixture(scope="module")
def chexpert_train(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CheXpert folder whose own train.csv is the one torchxrayvision ships (no JPEGs: the
    folder's own label file is not checked image by image)."""
    root = tmp_path_factory.mktemp("chexpert")
    with gzip.open(shipped("chexpert_train.csv.gz"), "rb") as src, open(root / "train.csv", "wb") as dst:
        shutil.copyfileobj(src, dst)
    return root


def test_chexpert_labels_follow_chex_dataset(xrv, nowhere: str, chexpert_train: Path) -> None:
    loader = xrv.CheX_Dataset(nowhere, views=["*"], unique_patients=False)
    assert set(chexpert.TERMS.values()) == {str(p) for p in loader.pathologies}
    ids = [p.split("/", 1)[1] for p in loader.csv["Path"]]
    minus_one = [(RENAMED.get(c, c), loader.csv[c].to_numpy() == -1) for c in chexpert.OBSERVATIONS]
    uncertain = [frozenset(n for n, column in minus_one if column[k]) for k in range(len(ids))]
    # No Finding = 1 clears a -1 too: torchxrayvision zeroes before -1 becomes NaN
    unsure = [u & nan for u, nan in zip(uncertain, unknowns(loader), strict=True)]
    yes = positives(loader)
    for rule in ("ignore", "positive"):  # -1 follows uncertain= (negative: test_cxr_chexpert); blank is absent
        want = [(y | u if rule == "positive" else y, SEPARATOR.join(sorted(u)) if rule == "ignore" else "")
                for y, u in zip(yes, unsure, strict=True)]
        items = read_inputs(f"chexpert:{chexpert_train}?views=all&uncertain={rule}").items
        assert [it.id for it in items] == ids
        assert [(names(it.label), it.extra["uncertain"]) for it in items] == want
    assert [it.group for it in items] == [f"patient{p}" for p in loader.csv["patientid"]]
    lateral = {"L": "LATERAL", "LL": "LATERAL", "RL": "LATERAL"}
    assert [it.extra["view"] for it in items] == [lateral.get(v, v) for v in loader.csv["view"]]


def test_mimic_departs_from_mimic_dataset_only_on_support_devices(xrv, nowhere: str, tmp_path: Path) -> None:
    """MIMIC_Dataset zeroes Support Devices under No Finding = 1; mimic.py keeps it, as
    CheX_Dataset does. MIMIC-CXR's labels file has CheXpert's columns: real CheXpert rows here."""
    with gzip.open(shipped("chexpert_train.csv.gz"), "rt", newline="") as fh:
        reader = csv.DictReader(fh)
        rows = [row for _, row in zip(range(30_000), reader, strict=False)]
    columns = ["No Finding", *chexpert.OBSERVATIONS]
    with open(tmp_path / "mimic-cxr-2.0.0-chexpert.csv", "w", newline="") as f1, \
            open(tmp_path / "mimic-cxr-2.0.0-metadata.csv", "w", newline="") as f2:
        labels, meta = csv.writer(f1), csv.writer(f2)
        labels.writerow(["subject_id", "study_id", *columns])
        meta.writerow(["dicom_id", "subject_id", "study_id", "ViewPosition", "StudyDate"])
        for n, row in enumerate(rows):
            subject = str(10_000_000 + int(row["Path"].split("/")[2][7:]))
            labels.writerow([subject, str(50_000_000 + n), *(row[c] for c in columns)])
            meta.writerow([f"d{n}", subject, str(50_000_000 + n), row["AP/PA"] or "LL", "21800506"])
    loader = xrv.MIMIC_Dataset(nowhere, str(tmp_path / "mimic-cxr-2.0.0-chexpert.csv"),
                               str(tmp_path / "mimic-cxr-2.0.0-metadata.csv"), views=["*"], unique_patients=False)
    theirs = dict(zip(loader.csv["dicom_id"], zip(positives(loader), loader.csv["No Finding"],
                                                   loader.csv["patientid"], strict=True), strict=True))
    items = read_inputs(f"mimic:{tmp_path}?views=all").items
    assert len(items) == len(rows) == len(theirs)
    departed = 0
    for it in items:
        yes, healthy, patient = theirs[it.id]
        if healthy == 1 and "Support Devices" in names(it.label):
            departed += 1
            yes = yes | {"Support Devices"}
        assert (names(it.label), it.group) == (yes, patient), it.id
    assert departed > 100


def test_padchest_terms_follow_pc_dataset_on_every_row(xrv, nowhere: str) -> None:
    loader = xrv.PC_Dataset(nowhere, views=["*"], unique_patients=False)
    assert set(padchest.TERMS.values()) | set(padchest.ALSO.values()) == set(loader.pathologies)
    unlabelled = set()
    checked = 0
    for cell, yes in zip(loader.csv["Labels"], positives(loader), strict=True):
        label, terms = padchest.label_and_terms(cell)
        if terms:
            assert names(label) == yes, cell
            checked += 1
        else:  # left out here: the report gave no label (PC_Dataset reads it as no finding)
            assert not yes
            unlabelled.add(cell)
    assert checked > 150_000 and unlabelled == {"['']"}


def test_rsna_labels_and_views_follow_rsna_dataset(xrv, nowhere: str) -> None:
    loader = xrv.RSNA_Pneumonia_Dataset(nowhere, views=["*"])
    assert set(rsna.TERMS.values()) == set(loader.pathologies)
    targets = rsna.targets(shipped("kaggle_stage_2_train_labels.csv.zip"))
    views = rsna.views(DatasetOptions())
    theirs = {p: (yes, view_name(v)) for p, yes, v in zip(loader.csv["patientId"], positives(loader),
                                                           loader.csv["view"], strict=True)}
    assert theirs == {p: (names(rsna.POSITIVE) if t else frozenset(), views[p]) for p, t in targets.items()}


def test_siim_labels_follow_siim_dataset_per_image(xrv, nowhere: str) -> None:
    loader = xrv.SIIM_Pneumothorax_Dataset(nowhere)
    assert set(siim.TERMS.values()) == set(loader.pathologies)
    rows: dict[str, list[frozenset[str]]] = {}
    for image, yes in zip(loader.csv["ImageId"], positives(loader), strict=True):
        rows.setdefault(image, []).append(yes)
    assert sum(len(r) > 1 for r in rows.values()) == 624  # one item per mask there, one image here
    masked = siim.masked(shipped("siim-pneumothorax-train-rle.csv.gz"))
    assert {i: frozenset().union(*r) for i, r in rows.items()} == \
        {i: frozenset({"Pneumothorax"}) if m else frozenset() for i, m in masked.items()}


def test_vindr_labels_follow_vindr_dataset_on_kaggles_file(xrv, nowhere: str, tmp_path: Path) -> None:
    loader = xrv.VinDr_Dataset(nowhere)
    assert {str(p) for p in loader.pathologies} <= set(vindr.TERMS.values())
    (tmp_path / "train").mkdir()
    for image in loader.csv["image_id"]:  # empty DICOMs: indexing lists the folder, reads none
        (tmp_path / "train" / f"{image}.dicom").touch()
    items = read_inputs(f"vindr:{tmp_path}?labels=torchxrayvision").items
    assert {it.id: names(it.label) for it in items} == dict(zip(loader.csv["image_id"], positives(loader),
                                                                   strict=True))


def test_openi_names_are_openi_datasets_and_labels_depart(xrv, nowhere: str) -> None:
    """openi.py reads the MeSH major terms where Openi_Dataset reads the automatic ones: the same
    names, other labels on some images (counted, not hidden)."""
    loader = xrv.Openi_Dataset(nowhere, views=["*"], unique_patients=False)
    theirs = dict(zip(loader.csv["imageid"], positives(loader), strict=True))
    reports = openi.read_reports(shipped("NLMCXR_reports.tgz"))
    ours = {i: frozenset(r.findings()) for r in reports for i in r.images
            if not {m.strip().lower() for m in r.major} <= {openi.NO_INDEXING, ""}}
    assert set(openi.TERMS.values()) - {"Consolidation"} == {str(p) for p in loader.pathologies}
    assert set(ours) < set(theirs)  # reports not coded (No Indexing) are left out here
    differ = sum(ours[i] != theirs[i] for i in ours)
    assert 0 < differ < len(ours) / 5, differ


def test_covid_labels_follow_covid19_dataset(xrv, tmp_path: Path) -> None:
    from tests.test_cxr_covid import COVID, FINDING, HEADER, ROWS

    with open(real_data() / COVID / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    (tmp_path / "images").mkdir()
    chosen = [rows[i] for i in ROWS]
    with open(tmp_path / "metadata.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, HEADER)
        writer.writeheader()
        for r in chosen:
            writer.writerow({"patientid": r["patientid"], "finding": FINDING[r["label"]], "view": r["view"],
                             "modality": "X-ray", "folder": "images", "filename": Path(r["path"]).name})
            if not (tmp_path / "images" / Path(r["path"]).name).exists():
                os.symlink(real_data() / COVID / r["path"], tmp_path / "images" / Path(r["path"]).name)
    loader = xrv.COVID19_Dataset(str(tmp_path / "images"), str(tmp_path / "metadata.csv"), views=["*"])
    theirs = dict(zip(loader.csv["filename"], positives(loader), strict=True))
    items = read_inputs(f"covid:{tmp_path}?views=all").items
    assert {it.label for it in items} >= {NO_FINDING, "COVID-19|Pneumonia|Viral"}
    assert {it.id: names(it.label) for it in items} == {i: y - {NO_FINDING} for i, y in theirs.items()}

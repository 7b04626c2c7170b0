"""`mimic:FOLDER` reads MIMIC-CXR-JPG as published: a tree built here from the real covid-notes
images (under MIMIC's files/pXX/pSUBJECT/sSTUDY/DICOM_ID.jpg names), their real notes written as
MIMIC-CXR report files (FINDINGS / IMPRESSION), the metadata / chexpert / split CSVs with
MIMIC's column names, and label values from real CheXpert rows (as torchxrayvision's wheel ships
them: MIMIC's chexpert file has the same 14 columns). Expected values are computed here from
what was written."""

from __future__ import annotations

import csv
import gzip
import hashlib
import os
import re
import shutil
import textwrap
from pathlib import Path

import pytest
from PIL import Image

from stitchkit.inputs import read_inputs
from stitchkit.inputs.cxr.layout import shipped_file
from stitchkit.store import EmbeddingStore
from tests.faults.helpers import run_inprocess

COVID = "covid-notes-384"
COLUMNS = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum", "Fracture",
           "Lung Lesion", "Lung Opacity", "No Finding", "Pleural Effusion", "Pleural Other", "Pneumonia",
           "Pneumothorax", "Support Devices"]
META = ["dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition", "Rows",
        "Columns", "StudyDate", "StudyTime", "ProcedureCodeSequence_CodeMeaning", "ViewCodeSequence_CodeMeaning",
        "PatientOrientationCodeSequence_CodeMeaning"]
VIEWS = {"PA": "PA", "AP": "AP", "AP Supine": "AP", "L": "LATERAL"}  # covid's view -> MIMIC's ViewPosition
FILES = ("mimic-cxr-2.0.0-metadata.csv.gz", "mimic-cxr-2.0.0-chexpert.csv.gz", "mimic-cxr-2.0.0-split.csv.gz")


def _chexpert_values(n: int) -> list[dict[str, str]]:
    """The 14 values of the first ``n`` real CheXpert rows."""
    with gzip.open(shipped_file("chexpert_train.csv.gz"), "rt", newline="") as fh:
        return [{c: row[c] for c in COLUMNS} for _, row in zip(range(n), csv.DictReader(fh), strict=False)]


def _sentences(notes: str) -> list[str]:
    text = " ".join(notes.split())
    return [s if s.endswith(".") else s + "." for s in text.split(". ") if s.strip(". ")]


def _report(kind: int, sentences: list[str]) -> tuple[str, dict[str, str]]:
    """A MIMIC-CXR report of the notes and what each text= should read from it."""
    head = "                                 FINAL REPORT\n EXAMINATION:  CHEST (PA AND LAT)\n \n INDICATION:  ___\n \n"
    if kind == 0:  # neither section: the text after the last header
        body = " ".join(sentences)
        return head + f" CONCLUSION:  {body}\n", dict.fromkeys(("report", "findings", "impression"), body)
    findings, impression = " ".join(sentences[:-1]), sentences[-1]

    def section(name: str, text: str) -> str:  # MIMIC wraps at ~70 columns, the body under its header
        lines = textwrap.wrap(text, 70, break_on_hyphens=False, break_long_words=False)
        if any(re.match(r"[A-Z][A-Z &/()-]*[A-Z)]:", line) for line in lines):  # "PC: …" is no header
            return f" {name}:  {text}\n \n"
        return f" {name}: \n \n" + "".join(f" {line}\n" for line in lines) + " \n"

    if kind == 1 or not findings:  # impression only
        return head + section("IMPRESSION", impression), {"report": impression, "findings": "", "impression": impression}
    return head + section("FINDINGS", findings) + section("IMPRESSION", impression), \
        {"report": f"{findings} {impression}", "findings": findings, "impression": impression}


def build(data: Path, root: Path, reports: Path | None) -> list[dict]:
    """The tree under ``root`` (reports under ``reports``); one dict per image written."""
    with open(data / COVID / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    studies: dict[tuple[str, str], int] = {}
    patients: dict[str, int] = {}  # covid's ids ("331a") in order, as numbers
    for row in rows:  # a study: a patient's images that share one note
        studies.setdefault((row["patientid"], row["notes"]), len(studies))
        patients.setdefault(row["patientid"], len(patients) + 1)
    values = _chexpert_values(len(studies))
    images = []
    for n, row in enumerate(rows):
        pid, k = patients[row["patientid"]], studies[(row["patientid"], row["notes"])]
        subject, study = str(10_000_000 + pid * 1_234_567 % 9_000_000), str(50_000_000 + 7 * k)
        dicom = "-".join(hashlib.sha1(row["path"].encode()).hexdigest()[i:i + 8] for i in range(0, 40, 8))
        view = VIEWS[row["view"]] if row["view"] != "L" or n % 2 else "LL"  # MIMIC writes both
        images.append({"dicom": dicom, "subject": subject, "study": study, "view": view, "source": row["path"],
                       "split": ("test", "validate", "train", "train")[pid % 4], "values": values[k],
                       "labelled": k != 3, "notes": row["notes"], "kind": k % 3})
        image = root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}" / f"{dicom}.jpg"
        image.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(data / COVID / row["path"], image)  # decoded by content; the embed test converts
    seen = set()
    for img in images:
        sentences = _sentences(img["notes"])
        img["texts"] = None
        if reports is not None and sentences:
            text, img["texts"] = _report(img["kind"], sentences)
            file = reports / "files" / f"p{img['subject'][:2]}" / f"p{img['subject']}" / f"s{img['study']}.txt"
            if img["study"] not in seen:
                file.parent.mkdir(parents=True, exist_ok=True)
                file.write_text(text)
                seen.add(img["study"])
    _write(root, images)
    return images


def _write(root: Path, images: list[dict]) -> None:
    def table(name: str, header: list[str], rows: list[list[str]]) -> None:
        with gzip.open(root / name, "wt", newline="") as fh:
            csv.writer(fh).writerows([header, *rows])

    table(FILES[0], META, [[i["dicom"], i["subject"], i["study"], "CHEST (PA AND LAT)", i["view"], "3056", "2544",
                            "21800506", "213014.531", "Chest X-ray", "", "Erect"] for i in images])
    labelled = {i["study"]: i for i in images if i["labelled"]}
    table(FILES[1], ["subject_id", "study_id", *COLUMNS],
          [[i["subject"], s, *(i["values"][c] for c in COLUMNS)] for s, i in labelled.items()])
    table(FILES[2], ["dicom_id", "study_id", "subject_id", "split"],
          [[i["dicom"], i["study"], i["subject"], i["split"]] for i in images])


def expected(values: dict[str, str], uncertain: str = "ignore") -> tuple[str, str]:
    """(label, uncertain) as the reader should write them: "Pleural Effusion" is Effusion; No
    Finding = 1 clears every observation but Support Devices."""
    healthy = values["No Finding"] == "1.0"
    positive, unsure = set(), set()
    for column, value in values.items():
        if column == "No Finding" or (healthy and column != "Support Devices"):
            continue
        name = "Effusion" if column == "Pleural Effusion" else column
        if value == "1.0" or (value == "-1.0" and uncertain == "positive"):
            positive.add(name)
        elif value == "-1.0" and uncertain == "ignore":
            unsure.add(name)
    return "|".join(sorted(positive)) or "No Finding", "|".join(sorted(unsure))


@pytest.fixture(scope="module")
def tree(data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    root = tmp_path_factory.mktemp("mimic") / "2.0.0"
    root.mkdir()
    return root, build(data, root, root / "mimic-cxr-reports")


def test_index_matches_the_written_rows(tree: tuple[Path, list[dict]]) -> None:
    root, images = tree
    inputs = read_inputs(f"mimic:{root}?views=all")
    got = {it.id: it for it in inputs.items}
    kept = [i for i in images if i["labelled"]]
    assert 0 < len(kept) < len(images) and set(got) == {i["dicom"] for i in kept}  # an unlabelled study left out
    lateral_spellings = set()
    for img in kept:
        it = got[img["dicom"]]
        assert (it.label, it.extra["uncertain"]) == expected(img["values"])
        assert it.group == img["subject"] and it.extra["study"] == f"s{img['study']}"
        assert it.extra["split"] == img["split"]
        assert it.extra["view"] == ("LATERAL" if img["view"] in ("LATERAL", "LL") else img["view"])
        lateral_spellings.add(img["view"])
        assert it.path == root / "files" / f"p{img['subject'][:2]}" / f"p{img['subject']}" / f"s{img['study']}" \
            / f"{img['dicom']}.jpg"
        assert it.text == (img["texts"]["report"] if img["texts"] else None)
    assert {"LATERAL", "LL"} <= lateral_spellings
    assert any(it.extra["uncertain"] for it in inputs.items) and any(it.text for it in inputs.items)
    assert inputs.kind == "mimic" and inputs.modality == "image"
    assert {"label", "group", "text", "view", "study", "split", "uncertain"} <= set(inputs.columns)


def test_options_select_rows(tree: tuple[Path, list[dict]]) -> None:
    root, images = tree
    kept = [i for i in images if i["labelled"]]

    def ids(query: str) -> list[str]:
        return [it.id for it in read_inputs(f"mimic:{root}?{query}").items]

    frontal = [i["dicom"] for i in kept if i["view"] in ("PA", "AP")]
    assert ids("") == frontal  # views=frontal by default, in the metadata's order
    assert ids("views=lateral") == [i["dicom"] for i in kept if i["view"] in ("LATERAL", "LL")]
    assert ids("views=pa") == [i["dicom"] for i in kept if i["view"] == "PA"]
    assert ids("split=test&views=all") == [i["dicom"] for i in kept if i["split"] == "test"]
    first: dict[str, str] = {}
    for i in kept:
        if i["view"] in ("PA", "AP"):
            first.setdefault(i["study"], i["dicom"])
    assert ids("per_study=first") == list(first.values()) and len(first) < len(frontal)
    for rule in ("positive", "negative"):
        got = {it.id: (it.label, it.extra["uncertain"]) for it in read_inputs(f"mimic:{root}?views=all&uncertain={rule}").items}
        assert got == {i["dicom"]: expected(i["values"], rule) for i in kept}
        assert got != {i["dicom"]: expected(i["values"]) for i in kept}  # the rule changed some rows


def test_report_sections_and_side_text(tree: tuple[Path, list[dict]]) -> None:
    root, images = tree
    kept = [i for i in images if i["labelled"]]
    for part in ("findings", "impression"):
        got = {it.id: it.text for it in read_inputs(f"mimic:{root}?views=all&text={part}").items}
        assert got == {i["dicom"]: (i["texts"][part] or None) if i["texts"] else None for i in kept}
    assert {i["kind"] for i in kept if i["texts"]} == {0, 1, 2}  # fallback, impression only, both
    inputs = read_inputs(f"mimic:{root}?side=text")
    first: dict[str, dict] = {}
    for i in kept:
        if i["view"] in ("PA", "AP"):
            first.setdefault(i["study"], i)
    want = {f"s{s}": i for s, i in first.items() if i["texts"]}  # the report's id: its study
    assert inputs.modality == "text" and [it.id for it in inputs.items] == list(want)
    for it in inputs.items:
        img = want[it.id]
        assert it.path is None and it.text == img["texts"]["report"] and it.group == img["subject"]
        assert it.extra["study"] == it.id
        assert (it.label, it.extra["uncertain"]) == expected(img["values"]) and it.extra["view"] == img["view"]


def test_reports_beside_the_folder_or_given(tree: tuple[Path, list[dict]], tmp_path: Path) -> None:
    root, images = tree
    jpg = tmp_path / "mimic-cxr-jpg"
    jpg.mkdir()
    for name in (*FILES, "files"):
        (jpg / name).symlink_to(root / name)
    assert all(it.text is None for it in read_inputs(f"mimic:{jpg}").items)  # no reports: no texts, no error
    elsewhere = tmp_path / "reports"
    shutil.copytree(root / "mimic-cxr-reports", elsewhere)
    want = [it.text for it in read_inputs(f"mimic:{root}").items]
    assert [it.text for it in read_inputs(f"mimic:{jpg}?reports={elsewhere}").items] == want
    assert [it.text for it in read_inputs(f"mimic:{jpg}?reports={elsewhere / 'files'}").items] == want
    (tmp_path / "mimic-cxr-reports").symlink_to(elsewhere)  # a sibling of the JPG folder
    assert [it.text for it in read_inputs(f"mimic:{jpg}").items] == want


def test_negbio_labels_by_path(tree: tuple[Path, list[dict]], tmp_path: Path) -> None:
    root, images = tree
    other = _chexpert_values(400)[-len({i["study"] for i in images}):]  # other real rows
    subject_of = {i["study"]: i["subject"] for i in images}
    studies = sorted(subject_of)
    negbio = tmp_path / "mimic-cxr-2.0.0-negbio.csv"
    with open(negbio, "w", newline="") as fh:
        csv.writer(fh).writerows([["subject_id", "study_id", *COLUMNS],
                                  *([subject_of[s], s, *(v[c] for c in COLUMNS)] for s, v in zip(studies, other, strict=True))])
    got = {it.id: (it.label, it.extra["uncertain"]) for it in read_inputs(f"mimic:{root}?views=all&labels={negbio}").items}
    by_study = dict(zip(studies, other, strict=True))
    assert got == {i["dicom"]: expected(by_study[i["study"]]) for i in images}  # every study labelled there


@pytest.mark.parametrize(("spec", "message"), [
    ("mimic:{empty}", "mimic-cxr-2.0.0-metadata.csv.gz is missing"),
    ("mimic:{nolabels}", "mimic-cxr-2.0.0-chexpert.csv.gz is missing"),
    ("mimic:{nosplit}?split=test", "mimic-cxr-2.0.0-split.csv.gz is missing: split=test reads it"),
    ("mimic:{nosplit}?side=text", "mimic-cxr-reports/ is missing: side=text reads the reports"),
    ("mimic:{nosplit}?text=findings", "mimic-cxr-reports/ is missing: text=findings reads the reports"),
    ("mimic:{root}?labels=torchxrayvision", "torchxrayvision ships no MIMIC-CXR labels"),
    ("mimic:{root}?split=valid", "split='valid' is not one of all, train, validate, test"),
    ("mimic:{root}?reports={empty}/nowhere", "is not a folder"),
])
def test_missing_files_are_one_line(tree: tuple[Path, list[dict]], tmp_path: Path, spec: str, message: str) -> None:
    root, _ = tree
    folders = {}
    for name, files in (("empty", ()), ("nolabels", FILES[0:1]), ("nosplit", FILES[:2])):
        folders[name] = tmp_path / name
        folders[name].mkdir()
        for file in files:
            (folders[name] / file).symlink_to(root / file)
    res = run_inprocess("embed", spec.format(root=root, **folders), "-m", "lite0", "-o", tmp_path / "x.h5")
    assert res.code == 2, res.stderr
    assert len(res.message_lines) == 1 and message in res.message_lines[0], res.stderr
    assert not (tmp_path / "x.h5").exists()


def test_embed_writes_labels_groups_texts_and_extras(data: Path, tmp_path: Path) -> None:
    root = tmp_path / "mimic"
    root.mkdir()
    images = build(data, root, root / "mimic-cxr-reports")
    chosen = [i for i in images if i["labelled"] and i["view"] in ("PA", "AP")][:6]
    shutil.rmtree(root / "files")
    for img in chosen:  # real JPEGs, as MIMIC-CXR-JPG publishes them
        out = root / "files" / f"p{img['subject'][:2]}" / f"p{img['subject']}" / f"s{img['study']}" / f"{img['dicom']}.jpg"
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.open(data / COVID / img["source"]).convert("L").save(out, quality=95)
    _write(root, chosen)
    res = run_inprocess("embed", f"mimic:{root}", "-m", "lite0", "-o", tmp_path / "m.h5", "--workers", "0")
    assert res.code == 0, res.stderr
    with EmbeddingStore(tmp_path / "m.h5") as store:
        rows = {i: (lab, g, v, s, sp) for i, lab, g, v, s, sp in zip(
            store.ids, store.labels, store.groups, store.column("view"), store.column("study"),
            store.column("split"), strict=True)}
        texts = dict(zip(store.ids, store.texts, strict=True))
    assert rows == {i["dicom"]: (expected(i["values"])[0], i["subject"], i["view"], f"s{i['study']}", i["split"])
                    for i in chosen}
    assert texts == {i["dicom"]: i["texts"]["report"] if i["texts"] else "" for i in chosen}


def test_a_split_file_in_another_order_gives_the_same_splits(tree: tuple[Path, list[dict]], tmp_path: Path) -> None:
    """The split file is read in step with the metadata (its order); a file in any other order,
    or missing an image, falls back to a lookup of the whole file: the same splits either way."""
    root, images = tree
    moved = tmp_path / "2.0.0"
    shutil.copytree(root, moved, ignore=shutil.ignore_patterns("mimic-cxr-reports"))
    rows = [[i["dicom"], i["study"], i["subject"], i["split"]] for i in images]
    with gzip.open(moved / FILES[2], "wt", newline="") as fh:
        csv.writer(fh).writerows([["dicom_id", "study_id", "subject_id", "split"], *rows[::-1][:-1]])
    first = images[0]["dicom"]  # the row left out: no split
    splits = {it.id: it.extra["split"] for it in read_inputs(f"mimic:{moved}?views=all").items}
    in_step = {it.id: it.extra["split"] for it in read_inputs(f"mimic:{root}?views=all").items}
    assert set(splits) == set(in_step)
    assert splits == {k: ("" if k == first else v) for k, v in in_step.items()}

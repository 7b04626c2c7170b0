"""`nih:FOLDER` reads NIH ChestX-ray14 as published: the real images under their NIH names, the
real rows of Data_Entry_2017_v2020.csv (as torchxrayvision's wheel ships it), and the official
split lists. Expected values are computed here from those rows and from NIH's findings.csv."""

from __future__ import annotations

import csv
import gzip
import os
from pathlib import Path

import pytest

from stitchkit.inputs import read_inputs
from stitchkit.inputs.cxr.layout import shipped_file
from stitchkit.store import EmbeddingStore

NIH = "nih-pneumonia-256"
ABSENT = 25  # real rows whose image the folder does not hold (a partial download)


def _data_entry_rows(names: set[str]) -> tuple[list[str], list[list[str]], list[list[str]]]:
    """Header, the real rows of ``names``, and the first ABSENT real rows of other images."""
    with gzip.open(shipped_file("Data_Entry_2017_v2020.csv.gz"), "rt", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        kept, other = [], []
        for row in reader:
            if row[0] in names:
                kept.append(row)
            elif len(other) < ABSENT:
                other.append(row)
    return header, kept, other


@pytest.fixture(scope="module")
def nih_findings(data: Path) -> list[dict[str, str]]:
    with open(data / NIH / "findings.csv", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def layout(data: Path, nih_findings: list[dict[str, str]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """NIH's published layout: images/ flat, Data_Entry, train_val_list / test_list by patient."""
    root = tmp_path_factory.mktemp("nih")
    (root / "images").mkdir()
    for row in nih_findings:
        os.symlink(data / NIH / row["path"], root / "images" / row["nih_image_index"])
    header, kept, other = _data_entry_rows({r["nih_image_index"] for r in nih_findings})
    with open(root / "Data_Entry_2017_v2020.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([header, *kept, *other])
    test = [r[0] for r in kept + other if int(r[3]) % 3 == 0]  # whole patients, as NIH splits
    train = [r[0] for r in kept + other if int(r[3]) % 3 != 0]
    (root / "test_list.txt").write_text("\n".join(test) + "\n")
    (root / "train_val_list.txt").write_text("\n".join(train) + "\n")
    return root


def _expected_label(finding_labels: str) -> str:
    parts = sorted(set(finding_labels.split("|")) - {"No Finding"})
    return "|".join(parts) or "No Finding"


def test_index_matches_nih_rows(layout: Path, nih_findings: list[dict[str, str]]) -> None:
    inputs = read_inputs(f"nih:{layout}")
    got = {it.id: it for it in inputs.items}
    assert set(got) == {r["nih_image_index"] for r in nih_findings}  # absent images left out
    for row in nih_findings:
        it = got[row["nih_image_index"]]
        assert it.label == _expected_label(row["finding_labels"])
        assert it.group == row["patient_id"]
        assert it.extra["view"] == row["view"]
        assert it.extra["split"] == ("test" if int(row["patient_id"]) % 3 == 0 else "train")
        assert it.path == layout / "images" / row["nih_image_index"]
    assert inputs.kind == "nih" and {"label", "group", "view", "split"} <= set(inputs.columns)


def test_options_select_rows(layout: Path, nih_findings: list[dict[str, str]]) -> None:
    pa = {r["nih_image_index"] for r in nih_findings if r["view"] == "PA"}
    assert 0 < len(pa) < len(nih_findings)
    assert {it.id for it in read_inputs(f"nih:{layout}?views=pa").items} == pa
    assert {it.id for it in read_inputs(f"nih:{layout}?views=ap").items} == \
        {r["nih_image_index"] for r in nih_findings} - pa
    test = {r["nih_image_index"] for r in nih_findings if int(r["patient_id"]) % 3 == 0}
    assert {it.id for it in read_inputs(f"nih:{layout}?split=test").items} == test
    with pytest.raises(Exception, match="no image is left after the options"):
        read_inputs(f"nih:{layout}?views=lateral")


def test_shipped_labels_serve_a_folder_of_images(data: Path, nih_findings: list[dict[str, str]]) -> None:
    # The shared folder keeps images in class sub-folders and has no Data_Entry of its own.
    inputs = read_inputs(f"nih:{data / NIH}?labels=torchxrayvision")
    got = {it.id: it.label for it in inputs.items}
    assert got == {r["nih_image_index"]: _expected_label(r["finding_labels"]) for r in nih_findings}


@pytest.mark.parametrize(("spec", "message"), [
    ("nih:{root}/nowhere", "is not a folder"),
    ("nih:{empty}", "Data_Entry_2017_v2020.csv is missing"),
    ("nih:{root}?view=pa", "did you mean views="),
    ("nih:{root}?views=oblique", "views='oblique' is not one of frontal, all, pa, ap, lateral"),
    ("nih:{root}?split=valid", "split='valid' is not one of all, train, test"),
    ("nih:{root}?uncertain=positive", "nih takes views, split, labels"),
])
def test_bad_specs_are_one_line(stitch, layout: Path, tmp_path: Path, spec: str, message: str) -> None:
    spec = spec.format(root=layout, empty=tmp_path)
    proc = stitch("embed", spec, "-m", "lite0", "-o", tmp_path / "out.h5")
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "out.h5").exists()


def test_split_needs_the_lists(layout: Path, tmp_path: Path) -> None:
    bare = tmp_path / "nih"
    bare.mkdir()
    (bare / "Data_Entry_2017_v2020.csv").symlink_to(layout / "Data_Entry_2017_v2020.csv")
    (bare / "images").symlink_to(layout / "images")
    assert {it.extra["split"] for it in read_inputs(f"nih:{bare}").items} == {""}
    with pytest.raises(Exception, match="test_list.txt beside the images"):
        read_inputs(f"nih:{bare}?split=test")


@pytest.mark.slow
def test_embed_writes_labels_groups_and_views(stitch, layout: Path, nih_findings: list[dict[str, str]],
                                              tmp_path: Path) -> None:
    small = tmp_path / "nih"
    (small / "images").mkdir(parents=True)
    chosen = nih_findings[:4] + nih_findings[-4:]  # no finding and pneumonia images
    for row in chosen:
        (small / "images" / row["nih_image_index"]).symlink_to(layout / "images" / row["nih_image_index"])
    (small / "Data_Entry_2017_v2020.csv").symlink_to(layout / "Data_Entry_2017_v2020.csv")
    proc = stitch("embed", f"nih:{small}", "-m", "lite0", "-o", tmp_path / "nih.h5")
    assert proc.returncode == 0, proc.stderr
    with EmbeddingStore(tmp_path / "nih.h5") as store:
        rows = dict(zip(store.ids, zip(store.labels, store.groups, store.column("view"), strict=True), strict=True))
    assert rows == {r["nih_image_index"]: (_expected_label(r["finding_labels"]), r["patient_id"], r["view"])
                    for r in chosen}

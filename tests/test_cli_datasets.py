"""`stitch datasets`: the listing names every registered dataset, a card its terms and options,
and a spec's summary counts what the folder holds (checked against NIH's findings.csv)."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest

from stitchkit.inputs.cxr import DATASETS, dataset
from stitchkit.inputs.cxr.findings import FINDINGS


def test_listing_names_every_dataset(stitch) -> None:
    proc = stitch("datasets", "--json")
    assert proc.returncode == 0, proc.stderr
    cards = json.loads(proc.stdout)["datasets"]
    assert [c["name"] for c in cards] == list(DATASETS)
    text = stitch("datasets").stdout
    assert all(f"\n{name} " in text or text.startswith(f"{name} ") for name in DATASETS[1:])


def test_every_term_maps_to_a_finding_name() -> None:
    for name in DATASETS:
        found = dataset(name)
        # names outside torchxrayvision's default set are the dataset's own extra findings
        assert found.findings, name
        assert set(found.terms) == {t.lower() for t in found.terms}, name
        assert all(f.strip() == f and f for f in found.findings), name
    assert set(dataset("nih").findings) == set(FINDINGS[:14])


def test_card_and_findings_matrix(stitch) -> None:
    card = stitch("datasets", "nih").stdout
    assert "Pleural_Thickening" in card and "split=all|train|test" in card
    matrix = stitch("datasets", "--findings").stdout.splitlines()
    assert matrix[1].split()[0] == FINDINGS[0]
    unknown = stitch("datasets", "nihh")
    assert unknown.returncode == 2 and "unknown dataset 'nihh'" in unknown.stderr


def test_summary_counts_nih_findings(stitch, data: Path) -> None:
    with open(data / "nih-pneumonia-256" / "findings.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    proc = stitch("datasets", f"nih:{data / 'nih-pneumonia-256'}?labels=torchxrayvision", "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["rows"] == len(rows)
    assert summary["patients"] == len({r["patient_id"] for r in rows})
    assert summary["views"] == dict(Counter(r["view"] for r in rows))
    assert summary["findings"] == dict(Counter(f for r in rows for f in r["finding_labels"].split("|")))


@pytest.mark.slow
def test_manifest_reads_back_as_the_spec_did(stitch, data: Path, tmp_path: Path) -> None:
    from stitchkit.inputs import read_inputs

    spec = f"nih:{data / 'nih-pneumonia-256'}?labels=torchxrayvision"
    proc = stitch("datasets", spec, "-o", tmp_path / "nih.csv")
    assert proc.returncode == 0, proc.stderr
    direct = read_inputs(spec).items
    back = read_inputs(tmp_path / "nih.csv").items
    assert [(i.id, i.path, i.label, i.group) for i in back] == [(i.id, i.path, i.label, i.group) for i in direct]
    assert [i.extra for i in back] == [i.extra for i in direct]  # view, study, split, uncertain kept
    assert read_inputs(tmp_path / "nih.csv").columns == read_inputs(spec).columns
    pa = read_inputs(tmp_path / "nih.csv", where={"view": "PA"}).items
    assert [i.id for i in pa] == [i.id for i in direct if i.extra["view"] == "PA"]
    refused = stitch("datasets", "nih", "-o", tmp_path / "x.csv")
    assert refused.returncode == 2 and not (tmp_path / "x.csv").exists()


def test_manifest_through_a_linked_folder_names_the_link(stitch, data: Path, tmp_path: Path) -> None:
    # Data folders on clusters are often symbolic links: the spec and the manifest it writes
    # must name the same paths, through the link, never the folder the link points at.
    from stitchkit.inputs import read_inputs

    link = tmp_path / "linked" / "nih"
    link.parent.mkdir()
    link.symlink_to((data / "nih-pneumonia-256").resolve(), target_is_directory=True)
    spec = f"nih:{link}?labels=torchxrayvision"
    proc = stitch("datasets", spec, "-o", tmp_path / "nih.csv")
    assert proc.returncode == 0, proc.stderr
    direct = read_inputs(spec).items
    back = read_inputs(tmp_path / "nih.csv").items
    assert [(i.id, i.path, i.label, i.group) for i in back] == [(i.id, i.path, i.label, i.group) for i in direct]
    with open(tmp_path / "nih.csv", newline="") as fh:
        written = [row["path"] for row in csv.DictReader(fh)]
    assert written and all(p.startswith(f"{link}/") for p in written)
    assert all(i.path.is_relative_to(link) and i.path.is_file() for i in back)
    # A relative spec, a manifest in another folder: its paths are absolute, through the link.
    (tmp_path / "out").mkdir()
    proc = stitch("datasets", "nih:linked/nih?labels=torchxrayvision", "-o", "out/nih.csv", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    again = read_inputs(tmp_path / "out" / "nih.csv").items
    assert [(i.id, i.path, i.label, i.group) for i in again] == [(i.id, i.path, i.label, i.group) for i in direct]


def test_where_each_official_split_comes_from_and_what_to_do_without(stitch, data: Path) -> None:
    listing = stitch("datasets").stdout
    assert "train_val_list.txt and test_list.txt" in listing and "  openi     none published" in listing
    assert "hold out patients yourself" in listing
    cards = {c["name"]: c for c in json.loads(stitch("datasets", "--json").stdout)["datasets"]}
    assert all(bool(c["split_from"]) == bool(c["splits"]) for c in cards.values())
    assert "publishes no official split" in cards["padchest"]["split_note"]
    # The shared NIH subset has no split lists: the summary says where they come from.
    proc = stitch("datasets", f"nih:{data / 'nih-pneumonia-256'}?labels=torchxrayvision", "--json")
    summary = json.loads(proc.stdout)
    assert summary["splits"] == {"none": summary["rows"]}
    assert "train_val_list.txt" in summary["split_note"] and "the folder lacks it" in summary["split_note"]

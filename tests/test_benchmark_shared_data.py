"""Data sets that share images, said by `stitch benchmark`: RSNA's and SIIM's images are NIH
ChestX-ray14's, CARZero's text encoder was tuned on PadChest (`stitchkit.inputs.cxr.shared`).

The stores are the session's Lite2 embeddings of real Kermany images (tests/conftest.py) with
the ``input`` attribute the real ``rsna:`` and ``nih:`` readers record: RSNA's read from the
layout tests/test_cxr_rsna.py builds (the real label rows, real NIH pixels), NIH's from the
shared folder. What is scored does not matter here, only what the run says of its data.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from stitchkit.inputs import read_inputs
from stitchkit.inputs.cxr import DATASETS
from stitchkit.inputs.cxr.shared import SHARED_IMAGES, TUNED_ON, dataset_of, shared_data
from stitchkit.store import EmbeddingStore, write_store
from stitchkit.zeroshot.benchmark import BenchmarkOptions, Route, load_suite, run_suite
from tests.test_cxr_rsna import layout, source  # noqa: F401  (the RSNA layout, as its reader's tests build it)

SUITE = {"name": "shared", "datasets": [
    {"name": "rsna-pneumonia", "store": "rsna", "task": "multiclass", "prompts": "pneumonia",
     "findings": ["normal", "pneumonia"]},
    {"name": "nih-pneumonia", "store": "nih", "task": "multiclass", "prompts": "pneumonia",
     "findings": ["normal", "pneumonia"]},
]}


def test_the_table_names_registry_data_sets_only() -> None:
    named = {s.dataset for s in SHARED_IMAGES} | {s.source for s in SHARED_IMAGES} | {t.dataset for t in TUNED_ON}
    assert named <= set(DATASETS)


def test_notes_for_data_sets_scored_together_fitted_on_and_tuned_on() -> None:
    scored = {"rsna-pneumonia": "rsna", "cxr14": "nih", "padchest": "padchest", "kermany": None}
    notes = shared_data(scored, {"map a.map": ["nih"], "head h.st": ["siim"]}, ["hf:CARZero/text", "lite0"])
    kinds = [(n["kind"], n["entries"]) for n in notes]
    assert kinds == [("scored together", ["rsna-pneumonia", "cxr14"]),
                     ("fitted on", ["rsna-pneumonia"]),  # the map's NIH holds RSNA's images
                     ("fitted on", ["cxr14"]),  # the head's SIIM images are NIH's
                     ("model tuned on", ["padchest"])]
    assert "8,196" in notes[0]["line"] and "not independent" in notes[0]["line"]
    assert shared_data({"a": "nih", "b": "nih"}, {"map m": ["nih"]}) == []  # one data set: fitted_on's rows
    assert shared_data(scored, {}, ["lite0"])[-1]["kind"] == "scored together"  # no CARZero, no tuned-on note


def test_the_real_readers_record_their_data_set(layout: Path, data: Path) -> None:  # noqa: F811
    assert dataset_of(read_inputs(f"rsna:{layout}").source) == "rsna"
    assert dataset_of(read_inputs(f"nih:{data}/nih-pneumonia-256?labels=torchxrayvision").source) == "nih"
    assert dataset_of(str(data / "kermany-pneumonia-224" / "labels.csv")) is None
    assert dataset_of("C:/data/x.csv") is None and dataset_of(None) is None


@pytest.fixture(scope="module")
def world(layout: Path, data: Path, lite2_store: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:  # noqa: F811
    from stitchkit.maps import AnchorPlan, fit_map
    from stitchkit.zeroshot.captions import CaptionSource, make_captions
    from stitchkit.zeroshot.prompts import load_prompts

    d = tmp_path_factory.mktemp("shared-data")
    with open(data / "kermany-pneumonia-224" / "labels.csv", newline="") as fh:
        label = {r["path"]: r["label"] for r in csv.DictReader(fh)}
    with EmbeddingStore(lite2_store) as s:
        ids, emb, attrs = [str(i) for i in s.ids], s.read(), s.attrs
    attrs = {k: v for k, v in attrs.items() if k not in ("complete", "dim", "format", "format_version")}
    columns = {"labels": [label[i] for i in ids], "groups": ids}
    sources = {"rsna": read_inputs(f"rsna:{layout}").source,
               "nih": read_inputs(f"nih:{data}/nih-pneumonia-256?labels=torchxrayvision").source}
    stores = {n: write_store(d / f"{n}.h5", ids, emb, attrs={**attrs, "input": src}, columns=columns)
              for n, src in sources.items()}
    captions = d / "captions.h5"
    make_captions(lite2_store, out=captions, text_model="minilm", source=CaptionSource(prompts=load_prompts("pneumonia")))
    train = [i for i in ids if i.startswith("train/")]
    fit_map(lite2_store, captions, "ridge", plan=AnchorPlan(anchors=train)).save(d / "kermany.map")
    fit_map(stores["nih"], captions, "ridge", plan=AnchorPlan(anchors=train)).save(d / "nih.map")
    (d / "suite.yaml").write_text(json.dumps(SUITE))  # JSON is YAML
    return {"dir": d, "stores": {n: str(p) for n, p in stores.items()}, "suite": d / "suite.yaml"}


def _run(world: dict, map_name: str, out: str, datasets: list[str] | None = None) -> dict:
    route = Route(text_model="minilm", map_path=str(world["dir"] / map_name), scoring="cosine")
    stores = {n: p for n, p in world["stores"].items() if not datasets or n in {"rsna"}}
    return run_suite(load_suite(world["suite"]), stores, route, world["dir"] / out,
                     BenchmarkOptions(bootstrap=0, datasets=datasets or []))


def test_two_data_sets_sharing_images_are_marked_in_the_table_the_json_and_the_records(world: dict) -> None:
    data = _run(world, "kermany.map", "together")
    out = world["dir"] / "together"
    assert [d["data_source"] for d in data["datasets"]] == ["rsna", "nih"]
    [note] = data["shared_data"]
    assert note["kind"] == "scored together" and note["entries"] == ["rsna-pneumonia", "nih-pneumonia"]
    assert json.loads((out / "benchmark.json").read_text())["shared_data"] == data["shared_data"]
    assert all(d["shared_data"] == [note["line"]] for d in data["datasets"])
    table = (out / "table.md").read_text()
    assert f"Shared data: {note['line']}." in table
    assert table.index("Shared data:") > table.index("| nih-pneumonia |")  # under the table
    records = json.loads((out / "records.json").read_text())
    assert {(r["dataset"], r["data_source"], r["shared_data"]) for r in records} == {
        ("rsna-pneumonia", "rsna", note["line"]), ("nih-pneumonia", "nih", note["line"])}


def test_a_map_fitted_on_nih_is_marked_when_rsna_is_scored(world: dict) -> None:
    from stitchkit.artifacts import read_header

    with EmbeddingStore(world["stores"]["nih"]) as nih:  # the map records which data set it was fitted on
        assert [p["input"] for p in read_header(world["dir"] / "nih.map")["fitted_on"]["parts"]] == [nih.attrs["input"]]
    data = _run(world, "nih.map", "fitted", datasets=["rsna-pneumonia"])
    [note] = data["shared_data"]
    assert note["kind"] == "fitted on" and note["datasets"] == ["rsna", "nih"]
    assert "nih.map" in note["line"] and "overlap check cannot count them" in note["line"]
    assert "Shared data: map" in (world["dir"] / "fitted" / "table.md").read_text()
    quiet = _run(world, "kermany.map", "alone", datasets=["rsna-pneumonia"])
    assert quiet["shared_data"] == [] and "Shared data" not in (world["dir"] / "alone" / "table.md").read_text()

"""Labels stay out of zero-shot: every piece that reads labels records it, and a result through
such a piece says so (notes, composition, the ``label_use`` column of its record).

The real tests fit small maps on the session's Lite0 / Lite2 stores (train split as anchors)
and classify the test split through them with the session's head, which is itself trained on
label captions (``pneumonia_head``): so every route here uses labels through the head, and
what tells the maps apart is the map's own part.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from stitchkit.fileio import id_file_fields, read_id_file, write_id_file
from stitchkit.label_use import (
    NONE,
    STRATIFIED_ANCHORS,
    captions_use_labels,
    head_label_use,
    head_meta_label_use,
    label_use_notes,
    label_use_of,
    map_label_use,
    record_label_use,
)
from stitchkit.results import table, to_record

from .conftest import run_stitch


# -- without stores -----------------------------------------------------------------------------
def test_id_file_header_fields_are_comments_readers_skip(tmp_path: Path) -> None:
    path = write_id_file(tmp_path / "ids.txt", ["a", "b"],
                         header=["stitch anchors select x.h5 -n 2", "label_use: anchors chosen by label (stratified)"])
    assert read_id_file(path) == ["a", "b"]
    assert id_file_fields(path) == {"label_use": "anchors chosen by label (stratified)"}
    # Fields are read at the head only: a comment after the first id is no header.
    (tmp_path / "late.txt").write_text("a\n# label_use: late\nb\n")
    assert id_file_fields(tmp_path / "late.txt") == {}


def test_old_map_records_are_read_by_what_they_hold() -> None:
    base = {"n_fit": 40, "n_pool": 120, "n_heldout": 24}
    assert map_label_use({**base, "strategy": "stratified"}) == STRATIFIED_ANCHORS
    assert map_label_use({**base, "strategy": "random"}) is None
    # "stratified" with every candidate fitted chose nothing, so read no label
    assert map_label_use({**base, "n_fit": 96, "strategy": "stratified"}) is None
    assert map_label_use({**base, "strategy": "stratified", "label_use": None}) is None  # a new record says
    assert map_label_use(None) is None


def test_head_metadata_and_caption_origins() -> None:
    assert captions_use_labels("label-derived captions (prompts pneumonia); not zero-shot")
    assert captions_use_labels("finding sentences from labels (prompts cxr14); label-derived")
    assert not captions_use_labels("reports standardised by the rule-based standardiser")
    assert not captions_use_labels(None)
    reports = {"inputs": {"text_origin": "report text as written"}, "training": {"positives": "same text"}}
    labels = {"inputs": {"text_origin": "label-derived captions (prompts x)"}, "training": {"positives": "same label"}}
    assert head_meta_label_use(reports) is None
    assert head_meta_label_use(labels) == "trained on label-derived captions (prompts x)"
    ensemble = SimpleNamespace(heads=[SimpleNamespace(meta_=reports), SimpleNamespace(meta_=labels),
                                      SimpleNamespace(meta_=labels)])
    assert head_label_use(ensemble) == "trained on label-derived captions (prompts x)"  # once, not per head


def test_composition_notes_and_record_column() -> None:
    composition = {"query": {"path": "q.h5", "model_spec": "lite0"},
                   "map": {"path": "gone.map", "target": {"model_spec": "lite2"}, "label_use": STRATIFIED_ANCHORS},
                   "head": {"path": "gone.head", "label_use": None}}
    assert label_use_of(composition) == [f"map: {STRATIFIED_ANCHORS}"]
    assert "not a zero-shot result" in label_use_notes(composition)[0]
    rec = to_record("classify", {"n": 4, "classes": ["a"], "composition": composition, "metrics": {}})
    assert rec["label_use"] == f"map: {STRATIFIED_ANCHORS}"
    cosine = to_record("classify", {"n": 4, "classes": ["a"], "composition": {"query": {"path": "q.h5"}},
                                    "metrics": {"auc": {"a": 0.5}}})
    assert cosine["label_use"] == NONE and label_use_notes(cosine["composition"]) == []
    # A result that does not record it, through a map file that is gone: unknown, never "none".
    old = to_record("classify", {"n": 4, "classes": ["a"], "metrics": {},
                                 "composition": {"query": {"path": "q.h5"}, "map": {"path": "gone.map"}}})
    assert old["label_use"].startswith("map: unknown")
    # A zero-shot table states its label use, also where it is "none".
    header, rows = table([rec, cosine])
    assert header[:4] == ["dataset", "model", "task", "label_use"]
    assert [r[3] for r in rows] == [f"map: {STRATIFIED_ANCHORS}", NONE]


def test_record_label_use_fills_the_plan() -> None:
    head_meta = {"inputs": {"text_origin": "label-derived captions (prompts p)"}}
    plan = SimpleNamespace(mapper=SimpleNamespace(anchors_={"label_use": STRATIFIED_ANCHORS}),
                           head=SimpleNamespace(meta_=head_meta), notes=[],
                           composition={"map": {"path": "m.map"}, "head": {"path": "h.head"}})
    record_label_use(plan)
    assert plan.composition["map"]["label_use"] == STRATIFIED_ANCHORS
    assert plan.composition["head"]["label_use"] == "trained on label-derived captions (prompts p)"
    assert len(plan.notes) == 1 and "map: anchors chosen by label" in plan.notes[0]
    clean = SimpleNamespace(mapper=SimpleNamespace(anchors_={"label_use": None}), head=None, notes=[],
                            composition={"map": {"path": "m.map"}})
    record_label_use(clean)
    assert clean.composition["map"]["label_use"] is None and clean.notes == []
    # A map chained with an adaptation (classify --adapt): the chain's maps answer, not the chain.
    chained = SimpleNamespace(mapper=SimpleNamespace(maps=[SimpleNamespace(anchors_={}),
                                                           SimpleNamespace(anchors_={"label_use": STRATIFIED_ANCHORS})]),
                              head=None, notes=[], composition={"map": {"path": "m.map"}})
    record_label_use(chained)
    assert chained.composition["map"]["label_use"] == STRATIFIED_ANCHORS and len(chained.notes) == 1


# -- real stores (slow: the session's stores and head) -----------------------------------------
def _split(store: Path, split: str) -> list[str]:
    from stitchkit.store import EmbeddingStore

    with EmbeddingStore(store) as s:
        return [i for i in s.ids if i.startswith(f"{split}/")]


@pytest.fixture(scope="module")
def maps(lite0_store: Path, lite2_store: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Lite0 → Lite2 ridge maps on 40 of the train anchors: chosen stratified, at random, and
    from an id file `stitch anchors select --strategy stratified` wrote."""
    from stitchkit.maps import AnchorPlan, fit_map

    d = tmp_path_factory.mktemp("label-use")
    train = _split(lite0_store, "train")
    out: dict[str, Path] = {"dir": d}
    for strategy in ("stratified", "random"):
        plan = AnchorPlan(anchors=train, n_anchors=40, strategy=strategy, metrics=False)
        out[strategy] = fit_map(lite0_store, lite2_store, "ridge", plan=plan).save(d / f"{strategy}.map")
    for strategy in ("stratified", "random"):
        # the command chooses among every id of the store (the pool does not matter here)
        res = run_stitch("anchors", "select", lite2_store, "-o", d / f"{strategy}.txt", "-n", "40",
                         "--strategy", strategy, "--json")
        assert res.returncode == 0, res.stderr
        out[f"{strategy}_ids"] = d / f"{strategy}.txt"
        out[f"{strategy}_json"] = json.loads(res.stdout)
        plan = AnchorPlan(anchors=d / f"{strategy}.txt", metrics=False)
        out[f"{strategy}_file"] = fit_map(lite0_store, lite2_store, "ridge", plan=plan).save(d / f"{strategy}-file.map")
    return out


def test_a_stratified_map_records_label_use_and_a_random_one_does_not(maps: dict[str, Path]) -> None:
    from stitchkit.maps import load_map

    stratified, random = load_map(maps["stratified"]), load_map(maps["random"])  # through the file
    assert stratified.anchors_["label_use"] == STRATIFIED_ANCHORS
    assert "label_use" in random.anchors_ and random.anchors_["label_use"] is None
    assert stratified.anchors_["n_fit"] == random.anchors_["n_fit"] == 40


def test_an_id_file_carries_label_use_into_the_map(maps: dict[str, Path]) -> None:
    from stitchkit.maps import load_map

    assert read_id_file(maps["stratified_ids"])[0] != ""  # the header is skipped
    assert "anchors chosen by label (stratified" in id_file_fields(maps["stratified_ids"])["label_use"]
    assert maps["stratified_json"]["label_use"].startswith("anchors chosen by label (stratified")
    assert id_file_fields(maps["random_ids"])["label_use"] == NONE and maps["random_json"]["label_use"] is None
    # every anchor of the file is fitted (no --n-anchors): the labels were used by the file's choice
    used = load_map(maps["stratified_file"]).anchors_["label_use"]
    assert used.startswith("anchors chosen by label (stratified") and "(anchor file stratified.txt)" in used
    assert load_map(maps["random_file"]).anchors_["label_use"] is None


def test_a_map_onto_label_captions_records_label_use(lite2_store: Path, pneumonia_head: dict[str, Path]) -> None:
    from stitchkit.maps import AnchorPlan, fit_map

    m = fit_map(lite2_store, pneumonia_head["captions"], "ridge", plan=AnchorPlan(metrics=False))
    assert "target store captions.h5 holds label-derived captions" in m.anchors_["label_use"]


def test_results_through_the_map_say_so(lite0_store: Path, maps: dict[str, Path],
                                        pneumonia_head: dict[str, Path]) -> None:
    from stitchkit.head import Head
    from stitchkit.zeroshot.classify_plan import ClassifyOptions, plan_classification
    from stitchkit.zeroshot.prompts import load_prompts
    from stitchkit.zeroshot.scoring import classify_store

    head_use = head_label_use(Head.load(pneumonia_head["head"]))
    assert head_use and "label-derived captions" in head_use  # the fixture's head: --from-labels captions
    test = _split(lite0_store, "test")
    records = {}
    for name in ("stratified", "random"):
        res = classify_store(lite0_store, load_prompts("pneumonia"), text_model="minilm", map_path=maps[name],
                             head_path=pneumonia_head["head"], ids=test, bootstrap=0)
        records[name] = to_record("classify", res.to_dict())
    assert records["stratified"]["label_use"] == f"map: {STRATIFIED_ANCHORS}; head: {head_use}"
    assert records["random"]["label_use"] == f"head: {head_use}"
    header, rows = table(list(records.values()))
    assert "label_use" in header and rows[0][header.index("label_use")].startswith("map: anchors chosen by label")
    # What classify_plan's one line does (record_label_use on the opened plan): composition and note.
    plan = plan_classification(lite0_store, load_prompts("pneumonia"),
                               ClassifyOptions(text_model="minilm", map_path=maps["stratified"],
                                               head_path=pneumonia_head["head"]))
    record_label_use(plan)
    assert label_use_of(plan.composition) == [f"map: {STRATIFIED_ANCHORS}", f"head: {head_use}"]
    assert any("not a zero-shot result" in n and STRATIFIED_ANCHORS in n for n in plan.notes)

"""`stitch classify` end to end on real Kermany stores (Lite0, Lite2) with MiniLM prompts.

The head here is trained on label-derived captions of the train split ("There is pneumonia."),
so these figures are label-supervised, which is what a test of the plumbing needs: a head that
has learnt something, then classification on the held-out test split.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from stitchkit.errors import ProvenanceError, UsageError
from stitchkit.store import EmbeddingStore, write_store
from stitchkit.zeroshot.prompts import load_prompts
from stitchkit.zeroshot.scoring import classify_store

pytestmark = pytest.mark.slow


def _ids(store: Path, split: str) -> list[str]:
    with EmbeddingStore(store) as s:
        return [i for i in s.ids if i.startswith(f"{split}/")]


@pytest.fixture(scope="module")
def trained(pneumonia_head: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The session's head, and a folder of this module's own for what the tests write."""
    return {**pneumonia_head, "dir": tmp_path_factory.mktemp("classify")}


def test_label_captions_say_so_and_use_the_prompt_files_phrasing(trained: dict[str, Path]) -> None:
    assert "not zero-shot" in trained["origin"].read_text()
    # Captions vary their phrasing among the class's positive prompts, all from the file.
    allowed = {t for c in load_prompts("pneumonia").classes for t in c.positive}
    with EmbeddingStore(trained["captions"]) as s:
        written = set(s.texts)
    assert written <= allowed and len(written) > 2


def test_native_head_classifies_the_test_split(lite2_store: Path, trained: dict[str, Path], stitch) -> None:
    ids_file = trained["dir"] / "test.ids"
    ids_file.write_text("\n".join(_ids(lite2_store, "test")) + "\n")
    out = trained["dir"] / "scores.csv"
    r = stitch("classify", lite2_store, "--prompts", "pneumonia", "--text-model", "minilm",
               "--head", trained["head"], "--ids", ids_file, "-o", out, "--bootstrap", "200")
    assert r.returncode == 0, r.stderr
    assert "AUC pneumonia" in r.stdout and "95 % bootstrap CI" in r.stdout
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 60 and set(rows[0]) == {"id", "label", "normal", "pneumonia", "score:normal",
                                          "score:pneumonia", "predicted"}
    probs = np.array([[float(row["normal"]), float(row["pneumonia"])] for row in rows])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    res = classify_store(lite2_store, load_prompts("pneumonia"), text_model="minilm",
                         head_path=trained["head"], ids=_ids(lite2_store, "test"), bootstrap=0)
    assert res.metrics["auc"]["pneumonia"] > 0.75
    # Multi-label mode: pneumonia's positive against its negative prompt.
    ml = classify_store(lite2_store, load_prompts("pneumonia", mode="multilabel"), text_model="minilm",
                        head_path=trained["head"], ids=_ids(lite2_store, "test"), bootstrap=0)
    assert ml.metrics["mode"] == "multilabel" and ml.metrics["auc"]["pneumonia"] > 0.6


def test_through_a_map(lite0_store: Path, lite2_store: Path, trained: dict[str, Path]) -> None:
    from stitchkit.maps import AnchorPlan, fit_map

    m = fit_map(lite0_store, lite2_store, "orthogonal", plan=AnchorPlan(anchors=_ids(lite0_store, "train")))
    map_path = trained["dir"] / "l0-l2.map"
    m.save(map_path)
    res = classify_store(lite0_store, load_prompts("pneumonia"), text_model="minilm", map_path=map_path,
                         head_path=trained["head"], ids=_ids(lite0_store, "test"), bootstrap=0)
    assert res.composition["map"]["target"]["model_spec"] == "lite2"
    assert res.metrics["auc"]["pneumonia"] > 0.6


def test_mismatched_spaces_are_one_line(lite0_store: Path, lite2_store: Path, trained: dict[str, Path],
                                        stitch) -> None:
    r = stitch("classify", lite0_store, "--prompts", "pneumonia", "--text-model", "minilm",
               "--head", trained["head"])
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "head's image space" in r.stderr and "--force" in r.stderr
    # Forcing is possible for models with the same width ...
    forced = classify_store(lite0_store, load_prompts("pneumonia"), text_model="minilm",
                            head_path=trained["head"], force_space=True, bootstrap=0, allow_overlap=True)
    assert forced.n == 180 and forced.overlap["rows_in_head_training"] == 120
    # ... but cosine between a 1280-d image space and a 384-d text space never is.
    with pytest.raises(ProvenanceError, match="widths differ"):
        classify_store(lite2_store, load_prompts("pneumonia"), text_model="minilm", scoring="cosine",
                       force_space=True)


def test_pool_by_group_scores_per_study(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    prompts = ["There is pneumonia.", "There is no pneumonia.", "There is no abnormality.",
               "There is an abnormality."]
    text = rng.normal(size=(len(prompts), 8)).astype(np.float32)
    attrs = {"model_spec": "toy", "weights_sha256": "x"}
    ps = write_store(tmp_path / "prompts.h5", [f"p{i}" for i in range(4)], text, attrs=attrs,
                     columns={"texts": prompts})
    views = rng.normal(size=(7, 8)).astype(np.float32)
    q = write_store(tmp_path / "q.h5", [f"v{i}" for i in range(7)], views, attrs=attrs,
                    columns={"groups": ["s1", "s1", "s2", "s3", "s3", "s3", "s2"],
                             "labels": ["pneumonia", "pneumonia", "normal", "normal", "normal", "normal", "normal"]})
    pset = load_prompts("pneumonia")
    pset.classes[0].positive = ["There is no abnormality."]
    pset.classes[0].negative = ["There is an abnormality."]
    pset.classes[1].positive = ["There is pneumonia."]
    pset.classes[1].negative = ["There is no pneumonia."]
    out = tmp_path / "s.h5"
    res = classify_store(q, pset, prompt_store=ps, pool_by="group", output=out, bootstrap=0)
    assert res.n == 3
    import h5py

    with h5py.File(out) as f:
        assert [x.decode() for x in f["ids"][()]] == ["s1", "s2", "s3"]
        scores = f["scores"][()]
    # Study s2 is the mean of views 2 and 6, scored once.
    single = classify_store(write_store(tmp_path / "m.h5", ["s2"], views[[2, 6]].mean(0, keepdims=True),
                                        attrs=attrs), pset, prompt_store=ps, bootstrap=0, output=tmp_path / "m.csv")
    row = list(csv.DictReader((tmp_path / "m.csv").open()))[0]
    np.testing.assert_allclose(scores[1], [float(row["normal"]), float(row["pneumonia"])], rtol=1e-5)
    assert single.n == 1
    with pytest.raises(UsageError, match="no groups column"):
        classify_store(tmp_path / "m.h5", pset, prompt_store=ps, pool_by="group")

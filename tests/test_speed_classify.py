"""Classify through a map on a labelled store above the exact-bootstrap size: the fast paths
(counting AUC, bag of little bootstraps, truth once per label, slice reads) give the figures
that the written scores give when recomputed with scikit-learn."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
from sklearn.metrics import roc_auc_score

from stitchkit.maps import AnchorPlan, fit_map
from stitchkit.store import write_store
from stitchkit.zeroshot import metrics as M
from stitchkit.zeroshot.prompts import from_classes
from stitchkit.zeroshot.scoring import classify_store

CLASSES = ["effusion", "mass", "nodule"]


def test_classify_metrics_match_the_written_scores(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    d, n = 16, M.EXACT_MAX + 1500  # above EXACT_MAX: the little-bootstraps path
    src = {"model_spec": "src", "weights_sha256": "s"}
    img = {"model_spec": "img", "weights_sha256": "i"}
    anchors = rng.normal(size=(300, d)).astype(np.float32)
    mix = rng.normal(size=(d, d)).astype(np.float32)
    ids = [f"a{i}" for i in range(300)]
    write_store(tmp_path / "as.h5", ids, anchors, attrs=src)
    write_store(tmp_path / "at.h5", ids, anchors @ mix, attrs=img)
    fit_map(tmp_path / "as.h5", tmp_path / "at.h5", "affine", plan=AnchorPlan(metrics=False)).save(tmp_path / "m.map")
    # Queries lean towards their class's prompt vector (in the image space), so AUC > 0.5.
    prompts_img = rng.normal(size=(3, d)).astype(np.float32)
    y = rng.integers(0, 3, n)
    target = prompts_img[y] + 2.0 * rng.normal(size=(n, d)).astype(np.float32)
    query = target @ np.linalg.inv(mix)
    labels = np.array(CLASSES, dtype=object)[y]
    labels[:7] = ""  # unlabelled rows are left out of the metrics
    write_store(tmp_path / "q.h5", [f"q{i}" for i in range(n)], query.astype(np.float32), attrs=src,
                columns={"labels": list(labels)})
    prompts = from_classes(CLASSES)
    texts = prompts.texts()
    vec = {c: prompts_img[k] for k, c in enumerate(CLASSES)}
    glob = np.stack([next(vec[c] for c in CLASSES if c.replace("_", " ") in t) for t in texts])
    write_store(tmp_path / "p.h5", [f"p{i}" for i in range(len(texts))], glob, attrs=img,
                columns={"texts": texts})

    r = classify_store(tmp_path / "q.h5", prompts, prompt_store=tmp_path / "p.h5",
                       map_path=tmp_path / "m.map", scoring="cosine", output=tmp_path / "s.h5",
                       bootstrap=200, chunk_size=2048)
    m = r.metrics
    assert m["n"] == n - 7 and m["ci"]["method"].startswith("bag of little bootstraps")
    with h5py.File(tmp_path / "s.h5") as h5:
        logits, written = h5["logits"][()], h5["labels"].asstr()[()]
    keep = written != ""
    for k, c in enumerate(CLASSES):
        want = roc_auc_score(written[keep] == c, logits[keep, k])
        assert abs(m["auc"][c] - want) < 1e-12
        lo, hi = m["ci"]["auc"][c]
        assert lo < m["auc"][c] < hi and hi - lo < 0.05
    assert m["auc_macro"] > 0.6  # the queries do carry their class


def test_label_codes_and_scattered_reads(tmp_path: Path) -> None:
    """Labels come back as codes that rebuild the column; reads of runs of rows and of
    scattered rows, in any order, equal reading everything and indexing."""
    from stitchkit.store import EmbeddingStore
    from stitchkit.store import store as S

    rng = np.random.default_rng(2)
    n = 3 * S._READ_ROWS // 2 + 7  # codes span two read blocks
    x = rng.normal(size=(n, 4)).astype(np.float32)
    labels = np.array(["mass", "", "nodule", "épanchement"], dtype=object)[rng.integers(0, 4, n)]
    write_store(tmp_path / "q.h5", [f"q{i}" for i in range(n)], x, columns={"labels": list(labels)})
    with EmbeddingStore(tmp_path / "q.h5") as store:
        values, codes = store.column_codes("labels")
        assert codes.dtype == np.int32 and len(values) == 4 and len(set(values.tolist())) == 4
        np.testing.assert_array_equal(values[codes], labels)
        np.testing.assert_array_equal(store.labels, labels)
        assert store.column_codes("groups") is None
        runs = (rng.choice(n // 100, 30, replace=False)[:, None] * 100 + np.arange(40)).ravel()
        for rows in (runs, rng.permutation(runs), rng.choice(n, 300, replace=False)):
            np.testing.assert_array_equal(store.read(rows), x[rows])

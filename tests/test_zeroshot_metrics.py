"""Metrics against scikit-learn; the vectorised bootstrap against resampling by hand."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from stitchkit.zeroshot import metrics as M
from stitchkit.zeroshot.metrics import auc, classification_metrics, truth_matrix


def _data(n: int, n_cls: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_cls, n)
    truth = np.eye(n_cls, dtype=bool)[y]
    logit = rng.normal(size=(n, n_cls)) + 1.2 * truth
    prob = np.exp(logit)
    prob /= prob.sum(axis=1, keepdims=True)
    return truth, prob, logit


def test_auc_matches_sklearn_with_ties() -> None:
    rng = np.random.default_rng(0)
    y = rng.random(200) > 0.6
    s = np.round(rng.random(200) + 0.4 * y, 1)  # rounding makes ties
    assert abs(auc(y, s) - roc_auc_score(y, s)) < 1e-12
    s2 = rng.random(200) + 0.4 * y  # no ties: the counting shortcut
    assert abs(auc(y, s2) - roc_auc_score(y, s2)) < 1e-12
    assert np.isnan(auc(np.zeros(5, bool), np.arange(5.0)))


def test_weighted_auc_matches_sklearn_sample_weight() -> None:
    rng = np.random.default_rng(3)
    y = rng.random(500) > 0.7
    for s in (np.round(rng.random(500) + 0.5 * y, 1), rng.random(500) + 0.5 * y):
        w = rng.multinomial(500, np.full(500, 1 / 500), size=4).astype(np.float32)
        got = M._SortedClass(y, s).aucs(w)
        want = [roc_auc_score(y, s, sample_weight=row) for row in w]
        np.testing.assert_allclose(got, want, atol=1e-9)


def test_resampled_metrics_equal_metrics_of_the_resample() -> None:
    """Counts per sample give what computing on the drawn rows (repeated) gives."""
    truth, prob, logit = _data(400, 4, 5)
    rng = np.random.default_rng(1)
    weights = rng.multinomial(400, np.full(400, 1 / 400), size=3).astype(np.float32)
    for mode in ("multiclass", "multilabel"):
        pred, correct = M._predictions(truth, prob, mode)
        sorted_classes = [M._SortedClass(truth[:, c], logit[:, c]) for c in range(4)]
        got = M._resampled(M._indicators(truth, pred, correct), weights, sorted_classes)
        for k, w in enumerate(weights):
            idx = np.repeat(np.arange(400), w.astype(int))
            want = M._point(truth[idx], prob[idx], mode, logit[idx])
            np.testing.assert_allclose(got["auc"][k], want["auc"], atol=1e-9)
            for key in ("auc_macro", "accuracy", "f1_macro"):
                assert abs(got[key][k] - want[key]) < 1e-9, (mode, key)


def test_evaluate_multiclass_and_multilabel() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 300)
    truth = np.eye(3, dtype=bool)[y]
    prob = np.clip(truth * 0.5 + rng.random((300, 3)), 0, None)
    prob /= prob.sum(axis=1, keepdims=True)
    m = classification_metrics(truth, prob, ["a", "b", "c"], mode="multiclass", n_boot=200)
    assert abs(m["accuracy"] - (prob.argmax(1) == y).mean()) < 1e-12
    assert abs(m["f1_macro"] - f1_score(y, prob.argmax(1), average="macro")) < 1e-12
    for c in range(3):
        assert abs(m["auc"]["abc"[c]] - roc_auc_score(truth[:, c], prob[:, c])) < 1e-12
    lo, hi = m["ci"]["auc_macro"]
    assert lo <= m["auc_macro"] <= hi and hi - lo < 0.2
    assert m["ci"]["method"] == "percentile bootstrap" and m["ci"]["n_boot"] == 200
    ml = classification_metrics(truth, prob, ["a", "b", "c"], mode="multilabel", n_boot=0)
    assert abs(ml["accuracy"] - ((prob >= 0.5) == truth).mean()) < 1e-12
    assert "ci" not in ml


@pytest.mark.slow
def test_little_bootstraps_agree_with_the_full_bootstrap() -> None:
    """Above EXACT_MAX the bag of little bootstraps gives about the full bootstrap's interval."""
    truth, prob, logit = _data(20_000, 3, 7)
    args = dict(ranking=logit, n_boot=1000, seed=0)
    blb = M.bootstrap_intervals(truth, prob, "multiclass", **args)
    full = M.bootstrap_intervals(truth, prob, "multiclass", exact_max=20_000, **args)
    assert blb["method"].startswith("bag of little bootstraps") and full["method"] == "percentile bootstrap"
    point = M._point(truth, prob, "multiclass", logit)
    for key in ("auc_macro", "accuracy", "f1_macro"):
        (a, b), (c, d) = blb[key], full[key]
        assert a < point[key] < b
        assert 0.75 < (b - a) / (d - c) < 1.33, key  # widths agree
        assert abs((a + b) / 2 - (c + d) / 2) < 0.25 * (d - c), key  # centres agree


def test_truth_matrix_equals_the_per_sample_loop() -> None:
    labels = np.array(["a", "b|c", "", "C", "d", "a"] * 50, dtype=object)
    matchers = [lambda s, k=k: k in s.lower().split("|") for k in ("a", "b", "c")]
    want = np.array([[m(lab) for m in matchers] for lab in labels], dtype=bool)
    np.testing.assert_array_equal(truth_matrix(labels, matchers), want)
    assert truth_matrix(np.array([], dtype=object), matchers).shape == (0, 3)


def test_spilled_columns_give_exactly_what_arrays_give(tmp_path) -> None:
    """The classify loop's per-class spill files and in-memory arrays: the same figures, to the
    last bit, in both modes (block by block, with samples whose label matches no class)."""
    from stitchkit.zeroshot.score_writer import ScoreSpill

    rng = np.random.default_rng(4)
    names = np.array(["a", "b", "c", "a|b", ""], dtype=object)
    matchers = [lambda s, k=k: k in s.split("|") for k in "abc"]
    labels = names[rng.integers(0, 5, 7000)]  # above EXACT_MAX: the little bootstraps
    rank = rng.normal(size=(7000, 3)).astype(np.float32)
    rank[:50] = rank[50:100]  # tied scores
    for mode in ("multiclass", "multilabel"):
        prob = (np.exp(rank) / np.exp(rank).sum(1, keepdims=True) if mode == "multiclass"
                else 1 / (1 + np.exp(-rank))).astype(np.float32)
        table = M.LabelTable(matchers)
        spill = ScoreSpill(lambda t=table: t.table, 3, mode, 100, tmp_path)  # grows past 100
        kept = []
        for a in range(0, 7000, 1024):
            codes = table.codes(labels[a:a + 1024])
            keep = table.usable(mode)[codes]
            spill.add(codes[keep], rank[a:a + 1024][keep], prob[a:a + 1024][keep])
            kept.append(np.arange(a, min(a + 1024, 7000))[keep])
        spill.finish()
        rows = np.concatenate(kept)
        got = M.evaluate_columns(spill, list("abc"), mode=mode, n_boot=100, seed=3)
        spill.close()
        assert not list(tmp_path.iterdir())  # the spill folder is gone
        want = classification_metrics(truth_matrix(labels[rows], matchers), prob[rows], list("abc"), mode=mode,
                        n_boot=100, seed=3, ranking=rank[rows])
        assert got == want and got["n"] == len(rows) < 7000, mode

"""Metrics against scikit-learn; the vectorised bootstrap against resampling by hand."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from stitchkit.errors import UsageError
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
    cols = M.ArrayColumns(truth, prob, "multiclass", logit)
    blb = M.bootstrap_intervals(cols, n_boot=1000, seed=0)
    full = M.bootstrap_intervals(cols, n_boot=1000, seed=0, exact_max=20_000)
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


# -- paired comparison of two scorers: DeLong and the paired, stratified bootstrap ------------------
def test_delong_variance_of_one_auc_is_the_hand_computed_value() -> None:
    # positives 0.8, 0.5, 0.4; negatives 0.5, 0.2 (one tie across the classes).
    # V10 (share of negatives below each positive, ties half): 1, 3/4, 1/2 → AUC 3/4;
    # V01 (share of positives above each negative): 1/2, 1.
    # Var = var(V10, ddof 1) / m + var(V01, ddof 1) / n = (1/16) / 3 + (1/8) / 2 = 1/48 + 3/48 = 1/12.
    y = np.array([1, 1, 1, 0, 0], dtype=bool)
    s = np.array([0.8, 0.5, 0.4, 0.5, 0.2])
    aucs, cov = M.delong_covariance(y, s)
    assert aucs.tolist() == [0.75] and cov.shape == (1, 1)
    assert cov[0, 0] == pytest.approx(1 / 12, rel=1e-12)
    # A perfect separation has every placement 1: no variance.
    assert M.delong_covariance(y, np.array([3.0, 4, 5, 1, 2]))[1][0, 0] == 0.0


def _slow_delong(y: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """DeLong from the structural components by their definition: the m × n kernel
    psi = 1 (positive above), 1/2 (tie), 0, averaged over rows (V10) and columns (V01)."""
    import math

    comps10, comps01 = [], []
    for s in (a, b):
        x, z = s[y], s[~y]
        psi = (x[:, None] > z[None, :]) + 0.5 * (x[:, None] == z[None, :])
        comps10.append(psi.mean(axis=1))
        comps01.append(psi.mean(axis=0))
    v10, v01 = np.array(comps10), np.array(comps01)
    cov = np.cov(v10) / y.sum() + np.cov(v01) / (~y).sum()
    aucs = v10.mean(axis=1)
    z = (aucs[0] - aucs[1]) / math.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    return aucs, cov, math.erfc(abs(z) / math.sqrt(2))  # two-sided normal p without scipy


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_delong_p_value_matches_the_slow_definition_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 150
    y = rng.random(n) < 0.35
    a = np.round(rng.normal(size=n) + 0.8 * y, 1)  # rounding: ties within and across classes
    b = np.round(0.6 * a + rng.normal(size=n) + 0.3 * y, 1)
    aucs, cov, p = _slow_delong(y, a, b)
    got_aucs, got_cov = M.delong_covariance(y, np.stack([a, b]))
    np.testing.assert_allclose(got_aucs, aucs, rtol=1e-12)
    np.testing.assert_allclose(got_cov, cov, rtol=1e-10)
    res = M.paired_auc_difference(y, a, b, n_boot=0)
    assert res["delong"]["p_value"] == pytest.approx(p, rel=1e-8)
    assert res["auc_a"] == pytest.approx(roc_auc_score(y, a)) and res["auc_b"] == pytest.approx(roc_auc_score(y, b))
    assert res["difference"] == pytest.approx(aucs[0] - aucs[1]) and "ci" not in res


@pytest.mark.parametrize("n", [300, 6000])  # the ordinary bootstrap, and the bag of little bootstraps
def test_paired_interval_is_zero_width_for_the_same_scores_and_holds_the_difference(n: int) -> None:
    rng = np.random.default_rng(4)
    y = rng.random(n) < 0.3
    a = np.round(rng.normal(size=n) + 1.0 * y, 2)
    b = a + rng.normal(size=n) * 0.8  # correlated with a, worse
    same = M.paired_auc_difference(y, a, a.copy(), n_boot=200)
    assert same["difference"] == 0.0 and same["ci"]["difference"] == [0.0, 0.0]
    assert same["delong"]["p_value"] == 1.0
    res = M.paired_auc_difference(y, a, b, n_boot=200)
    low, high = res["ci"]["difference"]
    assert low < res["difference"] < high and res["ci"]["level"] == 0.95
    # Paired: the interval follows DeLong's standard error of the difference (within a third),
    # far narrower than two separate intervals would suggest.
    assert (high - low) == pytest.approx(2 * 1.96 * res["delong"]["se"], rel=0.35)


def test_paired_comparison_does_not_depend_on_row_order() -> None:
    rng = np.random.default_rng(5)
    y = rng.random(400) < 0.4
    a = np.round(rng.normal(size=400) + y, 1)
    b = np.round(rng.normal(size=400) + 0.7 * y, 1)
    first = M.paired_auc_difference(y, a, b, n_boot=300, seed=3)
    order = rng.permutation(400)
    again = M.paired_auc_difference(y[order], a[order], b[order], n_boot=300, seed=3)
    assert again["ci"] == first["ci"]  # the same resamples, not just a similar interval
    assert again["difference"] == first["difference"]
    assert again["delong"]["p_value"] == pytest.approx(first["delong"]["p_value"], rel=1e-12)


def test_paired_comparison_refuses_what_it_cannot_measure() -> None:
    y = np.array([1, 0, 0, 0], dtype=bool)
    with pytest.raises(UsageError, match="at least two of each"):
        M.paired_auc_difference(y, np.arange(4.0), np.arange(4.0))
    with pytest.raises(UsageError, match="NaN"):
        M.paired_auc_difference(np.array([1, 1, 0, 0], bool), np.array([1, np.nan, 0, 0]), np.zeros(4))


def test_paired_resamples_keep_each_class_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stratified: every resample draws the positives among the positives and the negatives
    among the negatives, so 3 positives in 60 never leave a resample without one."""
    seen: list[tuple[np.ndarray, np.ndarray]] = []
    original = M.resampled_auc

    def spy(y: np.ndarray, score: np.ndarray):  # noqa: ANN202 - the wrapped function's own type
        inner = original(y, score)

        def aucs(weights: np.ndarray) -> np.ndarray:
            seen.append((np.asarray(y, dtype=bool), weights))
            return inner(weights)
        return aucs

    monkeypatch.setattr(M, "resampled_auc", spy)
    y = np.zeros(60, dtype=bool)
    y[[5, 20, 41]] = True
    rng = np.random.default_rng(6)
    M.paired_auc_difference(y, rng.normal(size=60), rng.normal(size=60), n_boot=100)
    resamples = [(ys, w) for ys, w in seen if len(w) > 1]
    assert sum(len(w) for _, w in resamples) == 2 * 100  # both scorers, every resample
    for ys, w in resamples:
        assert (w[:, ys].sum(axis=1) == 3).all() and (w[:, ~ys].sum(axis=1) == 57).all()


# -- intervals by patient: the cluster bootstrap -----------------------------------------------------
def test_group_codes_are_dense_and_an_empty_group_is_its_own() -> None:
    codes = M.group_codes(np.array(["p2", "", "p1", "p2", "", "p1"], dtype=object))
    assert sorted(set(codes)) == list(range(4))  # p1, p2, and each of the two ungrouped images
    assert codes[0] == codes[3] and codes[2] == codes[5] and codes[1] != codes[4]
    assert M.group_codes(None) is None


def test_a_group_resample_counts_whole_groups() -> None:
    """Every image of a group is weighted by its group's count; G groups are drawn each time."""
    groups = np.repeat(np.arange(50), np.arange(50) % 4 + 1)  # 1 to 4 images per patient
    design = M.resampling(np.random.default_rng(0), len(groups), 20, groups=groups)
    w = design.weights(np.random.default_rng(1), 0, 20)
    first = np.searchsorted(groups, np.arange(50))  # each group's first image
    np.testing.assert_array_equal(w, w[:, first][:, groups])  # constant within a group
    np.testing.assert_array_equal(w[:, first].sum(1), 50)
    assert design.record() == {"unit": "group", "n_groups": 50} and design.n_boot == 20


def test_one_image_per_group_matches_the_image_bootstrap() -> None:
    """Groups of one image: the ordinary bootstrap in distribution (its counts come from another
    stream), the little bootstraps draw for draw; point estimates never change."""
    truth, prob, logit = _data(600, 3, 11)
    plain = M.evaluate_columns(M.ArrayColumns(truth, prob, "multiclass", logit), list("abc"),
                               mode="multiclass", n_boot=2000, seed=4)
    single = M.evaluate_columns(M.ArrayColumns(truth, prob, "multiclass", logit, groups=np.arange(600)),
                                list("abc"), mode="multiclass", n_boot=2000, seed=4)
    assert {k: v for k, v in single.items() if k != "ci"} == {k: v for k, v in plain.items() if k != "ci"}
    assert plain["ci"]["unit"] == "image" and plain["ci"]["n_groups"] is None
    assert single["ci"]["unit"] == "group" and single["ci"]["n_groups"] == 600
    for key in ("auc_macro", "accuracy", "f1_macro"):
        (a, b), (c, d) = plain["ci"][key], single["ci"][key]
        assert 0.85 < (b - a) / (d - c) < 1.15 and abs(a - c) < 0.25 * (b - a), key
    truth, prob, logit = _data(6000, 2, 12)  # above EXACT_MAX: subsets of groups are subsets of images
    blb = [M.bootstrap_intervals(M.ArrayColumns(truth, prob, "multiclass", logit, groups=g), n_boot=100, seed=0)
           for g in (None, np.arange(6000))]
    for key in ("auc_macro", "accuracy", "f1_macro"):
        assert blb[0][key] == blb[1][key], key


def test_copies_of_each_image_narrow_the_image_bootstrap_but_not_the_patient_one() -> None:
    """Four images per patient, each a copy: resampling images takes them for four times the
    evidence (about half the width); resampling patients gives what one image each gives."""
    truth, prob, logit = _data(500, 2, 13)
    dup = np.repeat(np.arange(500), 4)
    one = M.bootstrap_intervals(M.ArrayColumns(truth, prob, "multiclass", logit, groups=np.arange(500)), seed=2)
    by_patient = M.bootstrap_intervals(M.ArrayColumns(truth[dup], prob[dup], "multiclass", logit[dup], groups=dup),
                                       seed=2)
    by_image = M.bootstrap_intervals(M.ArrayColumns(truth[dup], prob[dup], "multiclass", logit[dup]), seed=2)
    for key in ("auc_macro", "accuracy", "f1_macro"):
        assert by_patient[key] == one[key], key  # the same patients, the same draws, weights scaled alike
        (a, b), (c, d) = by_image[key], by_patient[key]
        assert 0.4 < (b - a) / (d - c) < 0.65, key


def test_resampled_aucs_are_exact_whatever_adds_them() -> None:
    """Whole counts make every resampled AUC a ratio of whole (or half) numbers computed exactly:
    the same seed gives the same bits on any machine, whatever order BLAS or SIMD adds in."""
    from fractions import Fraction

    rng = np.random.default_rng(8)
    y = rng.random(300) < 0.3
    s = np.round(rng.random(300) + 0.5 * y, 1)  # ties
    w = rng.multinomial(300, np.full(300, 1 / 300), size=5).astype(np.float32)
    got = M._SortedClass(y, s).aucs(w)
    for row, value in zip(w.astype(int), got, strict=True):
        pos = [(x, k) for x, k, t in zip(s, row, y, strict=True) if t]
        neg = [(x, k) for x, k, t in zip(s, row, y, strict=True) if not t]
        num = sum(Fraction(kp * kn) * (1 if xp > xn else Fraction(1, 2) if xp == xn else 0)
                  for xp, kp in pos for xn, kn in neg)
        assert value == float(num / (sum(k for _, k in pos) * sum(k for _, k in neg)))

"""Paired comparisons of two routes' scores on the same images (stitchkit.zeroshot.compare)."""

from __future__ import annotations

import numpy as np
import pytest

from stitchkit.zeroshot.compare import paired_macro_difference
from stitchkit.zeroshot.metrics import auc, paired_auc_difference


def _data(seed: int = 0, n: int = 300, findings: int = 3) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    truth = rng.random((n, findings)) < 0.3
    valid = rng.random((n, findings)) < 0.9
    a = truth + rng.normal(size=(n, findings))
    b = truth * 0.5 + rng.normal(size=(n, findings))
    return truth, valid, a, b


def test_the_macro_difference_is_the_mean_of_each_findings_difference() -> None:
    truth, valid, a, b = _data()
    found = paired_macro_difference(truth, valid, a, b, n_boot=200, seed=1)
    each = [auc(truth[valid[:, f], f], a[valid[:, f], f]) - auc(truth[valid[:, f], f], b[valid[:, f], f])
            for f in range(3)]
    assert found["difference"] == pytest.approx(np.mean(each), abs=1e-12)
    low, high = found["ci"]["difference"]
    assert low <= found["difference"] <= high and low > 0  # A is built to rank better
    one = paired_auc_difference(truth[valid[:, 0], 0], a[valid[:, 0], 0], b[valid[:, 0], 0], n_boot=0)
    assert found["delong_p"][0] == pytest.approx(one["delong"]["p_value"])


def test_a_route_against_itself_differs_by_nothing_in_every_resample() -> None:
    truth, valid, a, _ = _data(2)
    found = paired_macro_difference(truth, valid, a, a.copy(), n_boot=100)
    assert found["difference"] == 0 and found["ci"]["difference"] == [0.0, 0.0]


def test_a_finding_with_one_class_is_left_out() -> None:
    truth, valid, a, b = _data(3)
    truth[:, 1] = False
    assert paired_macro_difference(truth, valid, a, b, n_boot=0)["findings"] == [0, 2]


def test_the_paired_difference_resamples_whole_patients_where_there_are_groups() -> None:
    """`stitch benchmark --control` on a store with patients: copies of each image, one patient
    each, change nothing; without the groups the copies pass for evidence and narrow it."""
    truth, valid, a, b = _data(4, n=200)
    dup = np.repeat(np.arange(200), 3)
    one = paired_macro_difference(truth, valid, a, b, n_boot=300, seed=2, groups=np.arange(200))
    by_patient = paired_macro_difference(truth[dup], valid[dup], a[dup], b[dup], n_boot=300, seed=2, groups=dup)
    by_image = paired_macro_difference(truth[dup], valid[dup], a[dup], b[dup], n_boot=300, seed=2)
    assert by_patient["difference"] == pytest.approx(one["difference"], abs=1e-12)
    assert by_patient["ci"]["difference"] == pytest.approx(one["ci"]["difference"], abs=1e-12)
    assert (by_patient["ci"]["unit"], by_patient["ci"]["n_groups"]) == ("group", 200)
    assert (by_image["ci"]["unit"], by_image["ci"]["n_groups"]) == ("image", None)
    width = [r["ci"]["difference"][1] - r["ci"]["difference"][0] for r in (by_image, by_patient)]
    assert 0.45 < width[0] / width[1] < 0.75  # about 1 / sqrt(3)

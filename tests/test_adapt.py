"""`stitch adapt`: the label-free adaptation map, its rule, and where classify applies it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import Ridge

from stitchkit.errors import UsageError
from stitchkit.maps import functional as F
from stitchkit.maps import load_map
from stitchkit.maps.adapt import (
    MapChain,
    alpha_for_dims,
    domain_spectrum,
    effective_dims,
    fit_adaptation,
    fit_adaptation_stats,
    is_adaptation,
)
from stitchkit.store import EmbeddingStore
from stitchkit.zeroshot.prompts import load_prompts
from stitchkit.zeroshot.scoring import classify_store


def _domain(seed: int = 0, n: int = 200, d: int = 12) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # A few strong directions over isotropic noise, each feature on its own scale.
    return (rng.normal(size=(n, 3)) @ rng.normal(size=(3, d)) * 3 + rng.normal(size=(n, d))) * \
        rng.uniform(0.5, 4, d) + rng.normal(size=d)


def test_alpha_keeps_the_asked_effective_dimensions() -> None:
    lam = np.array([50.0, 20.0, 5.0, 1.0, 0.1])
    for dims in (0.5, 1.0, 2.5, 4.0):
        alpha = alpha_for_dims(lam, dims)
        assert effective_dims(lam, alpha) == pytest.approx(dims, rel=1e-9)
    # More dimensions kept: a smaller penalty.
    assert alpha_for_dims(lam, 1.0) > alpha_for_dims(lam, 3.0)
    with pytest.raises(UsageError, match="between 0 and the rank"):
        alpha_for_dims(lam, 5.0)


def test_the_adaptation_is_scikit_learns_ridge_of_the_domain_onto_itself_then_rescaled() -> None:
    X = _domain()
    m = fit_adaptation_stats(F.SuffStats.from_arrays(X, X, exact=True), dims=3.0)
    # Reference: standardise, sklearn Ridge x̃ -> x̃ with the same alpha, rescale the fitted
    # deviations to the domain's spread, restore the scale and mean.
    mu, sd = X.mean(0), X.std(0)
    Z = (X - mu) / sd
    alpha = m.adaptation_["alpha"]
    ref = Ridge(alpha=alpha, fit_intercept=True).fit(Z, Z)
    fitted = ref.predict(Z) - Z.mean(0)
    c = np.sqrt((Z.var(0) * sd**2).sum() / (fitted.var(0) * sd**2).sum())
    expected = (Z.mean(0) + fitted * c) * sd + mu
    np.testing.assert_allclose(m.transform(X), expected, rtol=2e-4, atol=2e-4 * np.abs(X).max())
    lam = domain_spectrum(F.SuffStats.from_arrays(X, X, exact=True))
    assert effective_dims(lam, alpha) == pytest.approx(3.0, rel=1e-6)


def test_adaptation_damps_the_directions_the_domain_hardly_uses() -> None:
    X = _domain()
    m = fit_adaptation_stats(F.SuffStats.from_arrays(X, X), dims=3.0)
    Z = (X - X.mean(0)) / X.std(0)
    _, _, Vt = np.linalg.svd(Z, full_matrices=False)
    out = (m.transform(X) - X.mean(0)) / X.std(0)
    kept = np.linalg.norm(out @ Vt[:3].T) / np.linalg.norm(Z @ Vt[:3].T)
    damped = np.linalg.norm(out @ Vt[-3:].T) / np.linalg.norm(Z @ Vt[-3:].T)
    assert damped < 0.2 * kept


def test_a_chain_applies_its_maps_in_turn() -> None:
    X, Y = _domain(1), _domain(2)
    first = fit_adaptation_stats(F.SuffStats.from_arrays(X, X), dims=2.0)
    second = fit_adaptation_stats(F.SuffStats.from_arrays(Y, Y), dims=4.0)
    chain = MapChain([first, second])
    np.testing.assert_array_equal(chain.transform(X), second.transform(first.transform(X)))
    assert (chain.n_features_in_, chain.n_features_out_, chain.l2) == (12, 12, False)


@pytest.fixture(scope="module")
def adapted(lite2_store: Path, pneumonia_head: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
            ) -> dict[str, Path]:
    """An adaptation map of the train images (their labels unread), written by the command."""
    from tests.conftest import run_stitch

    folder = tmp_path_factory.mktemp("adapt")
    res = run_stitch("adapt", lite2_store, "--ids", pneumonia_head["train_ids"], "--dims", "4", "-o", folder / "k.map")
    assert res.returncode == 0, res.stderr
    assert "adaptation on 120 images" in res.stdout
    return {"map": folder / "k.map", "dir": folder}


def test_the_map_file_names_its_images_and_rule_and_never_a_label(adapted: dict[str, Path]) -> None:
    m = load_map(adapted["map"])
    assert is_adaptation(m)
    assert m.anchors_["n_fit"] == 120 and m.anchors_["label_use"] is None
    assert m.anchors_["adaptation"]["dims"] == 4.0
    assert m.source_space_["model_spec"] == m.target_space_["model_spec"]


def test_the_labels_do_not_change_the_map(lite2_store: Path, pneumonia_head: dict[str, Path],
                                          tmp_path: Path) -> None:
    from stitchkit.store import write_store

    ids = pneumonia_head["train_ids"].read_text().split()
    with EmbeddingStore(lite2_store) as s:
        rows = s.index_of(ids)
        X, labels = s.read(rows), list(s.labels[rows])
        attrs = {"model_spec": s.model_spec, "weights_sha256": s.attrs.get("weights_sha256")}
    stores = [write_store(tmp_path / f"{name}.h5", ids, X, attrs=attrs, columns={"labels": column})
              for name, column in (("true", labels), ("other", ["x"] * len(ids)))]
    a, b = (fit_adaptation(store, dims=4.0) for store in stores)
    np.testing.assert_array_equal(a.transform(X), b.transform(X))


def test_classify_with_adapt_scores_what_apply_then_classify_scores(
        lite2_token_store: Path, pneumonia_head: dict[str, Path], adapted: dict[str, Path], stitch) -> None:
    """--adapt on a head route equals classifying the store that `stitch apply` adapted."""
    applied = adapted["dir"] / "k-adapted.h5"
    res = stitch("apply", adapted["map"], lite2_token_store, "-o", applied)
    assert res.returncode == 0, res.stderr
    test_ids = pneumonia_head["test_ids"].read_text().split()
    prompts = load_prompts("pneumonia")
    kw = dict(head_path=pneumonia_head["head"], ids=test_ids, bootstrap=0, image_tokens=False)
    direct = classify_store(lite2_token_store, prompts, adapt_path=adapted["map"], **kw)
    through = classify_store(applied, prompts, **kw)
    assert direct.composition["adapt"]["applied"] == "on the query"
    assert direct.metrics["auc_macro"] == pytest.approx(through.metrics["auc_macro"], abs=1e-6)
    plain = classify_store(lite2_token_store, prompts, **kw)
    assert direct.metrics["auc_macro"] != plain.metrics["auc_macro"]


def test_a_stitching_map_given_as_adapt_is_refused(lite0_store: Path, lite2_store: Path, tmp_path: Path,
                                                   pneumonia_head: dict[str, Path], stitch) -> None:
    res = stitch("fit", lite0_store, lite2_store, "--method", "ridge", "-o", tmp_path / "l0-l2.map")
    assert res.returncode == 0, res.stderr
    res = stitch("classify", lite2_store, "--adapt", tmp_path / "l0-l2.map", "--head", pneumonia_head["head"],
                 "--prompts", "pneumonia")
    assert res.returncode == 2
    assert "not an adaptation map" in res.stderr and "Traceback" not in res.stderr

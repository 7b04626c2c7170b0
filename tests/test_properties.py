"""Property tests (hypothesis) of the maps' algebra and of manifest parsing.

* Orthogonal maps preserve norms and invert exactly. That holds for the pure Procrustes
  solution, i.e. ``OrthogonalMap(center=False, standardize=False)`` and ``scale=False``: with
  centring or standard scaling on, the map is orthogonal in the preprocessed coordinates
  only (an affine map in the raw space), so there the test checks the round trip alone.
* Maps do not depend on the order of the anchors (the CV folds of alpha 'auto' come from the
  ids, not from positions).
* The streaming fit (statistics accumulated in chunks of any size, or per shard and merged)
  equals the in-memory fit.
* ``read_inputs`` on arbitrary CSV or JSONL text either returns inputs or raises UsageError.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from stitchkit.errors import UsageError
from stitchkit.inputs import read_inputs
from stitchkit.maps import AffineMap, LinearMap, OrthogonalMap, RidgeMap, SuffStats

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _pair(seed: int, n: int, dx: int, dy: int) -> tuple[np.ndarray, np.ndarray]:
    """Anchors whose target is a noisy linear image of the source, with offsets and scales."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, dx)) * rng.uniform(0.5, 3, dx) + rng.normal(0, 2, dx)
    Y = X @ rng.standard_normal((dx, dy)) + 0.1 * rng.standard_normal((n, dy)) + rng.normal(0, 2, dy)
    return X, Y


shapes = st.tuples(st.integers(0, 2**31 - 1), st.integers(2, 12), st.integers(2, 12)).filter(
    lambda t: t[1] <= t[2]
)


@SETTINGS
@given(shapes, st.integers(20, 80))
def test_pure_orthogonal_map_preserves_norms_and_inverts(shape: tuple[int, int, int], n: int) -> None:
    seed, dx, dy = shape
    X, Y = _pair(seed, n, dx, dy)
    m = OrthogonalMap(center=False, standardize=False).fit(X, Y)
    Z = np.random.default_rng(seed + 1).standard_normal((7, dx))
    mapped = m.transform(Z).astype(np.float64)
    np.testing.assert_allclose(np.linalg.norm(mapped, axis=1), np.linalg.norm(Z, axis=1), rtol=1e-5)
    # Inner products too: Q has orthonormal rows when dx <= dy.
    np.testing.assert_allclose(mapped @ mapped.T, Z @ Z.T, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(m.inverse_transform(mapped), Z, rtol=1e-4, atol=1e-4)


@SETTINGS
@given(st.integers(0, 2**31 - 1), st.integers(2, 10), st.booleans(), st.booleans(), st.booleans())
def test_orthogonal_round_trip_with_preprocessing(seed: int, d: int, center: bool, standardize: bool,
                                                  scale: bool) -> None:
    """Square maps invert exactly whatever the preprocessing (it is an invertible affine map)."""
    X, Y = _pair(seed, 40, d, d)
    m = OrthogonalMap(center=center, standardize=standardize, scale=scale).fit(X, Y)
    Z = X[:5]
    np.testing.assert_allclose(m.inverse_transform(m.transform(Z)), Z, rtol=1e-4, atol=1e-3)


MAPS = [
    lambda: OrthogonalMap(),
    lambda: OrthogonalMap(scale=True),
    lambda: AffineMap(),
    lambda: LinearMap(center=False),
    lambda: RidgeMap(alpha="auto", cv=3),
    lambda: RidgeMap(alpha=0.5),
]


@SETTINGS
@given(st.integers(0, 2**31 - 1), st.sampled_from(range(len(MAPS))), st.randoms(use_true_random=False))
def test_maps_do_not_depend_on_anchor_order(seed: int, which: int, rnd) -> None:  # noqa: ANN001
    X, Y = _pair(seed, 60, 6, 5)
    ids = np.array([f"img{i:03d}" for i in range(len(X))])
    perm = np.array(rnd.sample(range(len(X)), len(X)))
    a = MAPS[which]().fit(X, Y, ids=ids, exact=True)
    b = MAPS[which]().fit(X[perm], Y[perm], ids=ids[perm], exact=True)
    np.testing.assert_allclose(a.W_, b.W_, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(a.b_, b.b_, rtol=1e-7, atol=1e-9)
    Z = X[:4]
    np.testing.assert_allclose(a.transform(Z), b.transform(Z), rtol=1e-5, atol=1e-5)


@SETTINGS
@given(st.integers(0, 2**31 - 1), st.integers(1, 70), st.sampled_from(range(len(MAPS) - 1)),
       st.booleans())
@pytest.mark.slow
def test_streaming_fit_equals_in_memory_fit(seed: int, chunk: int, which: int, exact: bool) -> None:
    X, Y = _pair(seed, 70, 6, 5)
    X, Y = X.astype(np.float32), Y.astype(np.float32)  # what the store reader yields
    whole = SuffStats.from_arrays(X, Y, chunk_size=len(X), exact=exact)
    chunked = SuffStats.from_arrays(X, Y, chunk_size=chunk, exact=exact)
    cuts = sorted({0, len(X), *np.random.default_rng(seed).integers(1, len(X), 3).tolist()})
    shards = [SuffStats.from_arrays(X[a:b], Y[a:b], exact=exact) for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
    merged = shards[0]
    for s in shards[1:]:
        merged = merged.merge(s)
    tol = {"rtol": 1e-9, "atol": 1e-9} if exact else {"rtol": 2e-4, "atol": 2e-4}
    for stats in (chunked, merged):
        assert stats.n == whole.n
        np.testing.assert_allclose(stats.mean_x, whole.mean_x, **tol)
        for c1, c2 in zip(stats.centred(), whole.centred(), strict=True):
            np.testing.assert_allclose(c1, c2, rtol=tol["rtol"], atol=tol["atol"] * len(X))
        if which < 4:  # alpha 'auto' wants folds: compared below through fit(), not fit_stats
            a, b = MAPS[which]().fit_stats(whole), MAPS[which]().fit_stats(stats)
            np.testing.assert_allclose(a.transform(X[:5]), b.transform(X[:5]), rtol=1e-3, atol=1e-3)
    # The estimator's own streaming (fit reads arrays chunk by chunk) against one chunk.
    m1 = MAPS[which]().fit(X, Y, ids=[str(i) for i in range(len(X))], exact=True)
    m2 = MAPS[which]()
    m2.fit_stats(m1.n_folds_for(*X.shape) > 1 and _folds(X, Y, m1, chunk) or SuffStats.from_arrays(X, Y, chunk_size=chunk, exact=True))
    np.testing.assert_allclose(m1.transform(X[:5]), m2.transform(X[:5]), rtol=1e-5, atol=1e-5)


def _folds(X: np.ndarray, Y: np.ndarray, m, chunk: int) -> list[SuffStats]:  # noqa: ANN001
    from stitchkit.maps.anchors import fold_of

    which = fold_of([str(i) for i in range(len(X))], m.n_folds_for(*X.shape), m.random_state)
    return [SuffStats.from_arrays(X[which == k], Y[which == k], chunk_size=chunk, exact=True)
            for k in range(m.n_folds_for(*X.shape))]


# -- manifests -------------------------------------------------------------------------------
cells = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12) | st.sampled_from(
    ["", "id", "path", "text", "label", "group", "..", "/", "a/b.png", '"', ",", "\n", "\r\n", "\x00",
     "../../etc/passwd", "x" * 300]
)
csv_text = st.lists(st.lists(cells, max_size=5), max_size=6).map(
    lambda rows: "\n".join(",".join(r) for r in rows)
) | st.text(max_size=200)
# JSONL lines that parse: objects (or not) with the manifest's keys and arbitrary values.
json_values = cells | st.integers() | st.none() | st.booleans() | st.lists(cells, max_size=2)
jsonl_text = st.lists(
    st.dictionaries(st.sampled_from(["id", "path", "text", "label", "group", "x"]), json_values, max_size=5)
    | json_values,
    max_size=5,
).map(lambda rows: "\n".join(json.dumps(r) for r in rows))


@pytest.mark.slow
@settings(max_examples=25, deadline=None)
@given(csv_text, st.booleans(), st.sampled_from([".csv", ".jsonl"]), st.binary(max_size=3))
def test_manifest_parsing_never_crashes(text: str, with_root: bool, suffix: str, junk: bytes) -> None:
    _parse(text, with_root, suffix, junk)


@settings(max_examples=25, deadline=None)
@given(jsonl_text, st.booleans())
def test_jsonl_manifest_parsing_never_crashes(text: str, with_root: bool) -> None:
    _parse(text, with_root, ".jsonl", b"")


def _parse(text: str, with_root: bool, suffix: str, junk: bytes) -> None:
    """read_inputs returns inputs with unique ids, or raises UsageError; nothing else."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"manifest{suffix}"
        path.write_bytes(text.encode("utf-8", "surrogatepass") + junk)
        try:
            inputs = read_inputs(path, root=tmp if with_root else None)
        except UsageError:
            return
        assume(inputs.items)
        assert len({it.id for it in inputs.items}) == len(inputs.items)
        assert inputs.modality in ("image", "text")
        for it in inputs.items:  # everything read can be written to an HDF5 store
            assert not any("\x00" in (v or "") for v in (it.id, it.text, it.label, it.group))
            if with_root and it.path is not None:
                assert it.path.is_relative_to(Path(tmp).resolve())

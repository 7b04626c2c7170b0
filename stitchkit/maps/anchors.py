"""Which samples anchor a map: joining two stores by id, id files, selection and holdout.

Everything is keyed by id, never by row position, so that the order of the rows in either
store (or in an id file) cannot change which anchors are chosen: pools are sorted by id
before any seeded draw.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import UsageError
from ..fileio import read_id_file
from ..label_use import stratified_anchors
from ..store import EmbeddingStore, require_finite
from .functional import l2_normalize

STRATEGIES = ("random", "stratified", "farthest", "kmeans")
MAX_CANDIDATES = 50_000
"""Farthest-point and k-means selection look at most at this many candidates (drawn at random)."""


def rows_of(store: EmbeddingStore, ids: Sequence[str] | np.ndarray) -> np.ndarray:
    """Row positions of ``ids`` in ``store`` (a usage error naming a few missing ids).

    The store sorts its ids once per store object and answers by binary search (no dict over
    all rows), so the several lookups of one fit (pool, selection, statistics, held-out,
    probe) no longer re-sort every id each time.
    """
    return store.index_of(ids)


def _as_str(keys: np.ndarray) -> np.ndarray:
    """Fixed-width UTF-8 bytes as a fixed-width str array (ASCII, nearly every id, in C)."""
    if keys.size and int(keys.view(np.uint8).max(initial=0)) >= 128:
        return np.char.decode(keys, "utf-8")
    return keys.astype(f"U{max(keys.dtype.itemsize, 1)}")


def _sorted_str(ids: Sequence[str] | np.ndarray) -> np.ndarray:
    """``np.sort(ids.astype(str))`` without the copies when ids already are a sorted str array."""
    ids = np.asarray(ids)
    if ids.dtype.kind != "U":
        return np.sort(ids.astype(str))
    if len(ids) < 2 or bool(np.all(ids[1:] >= ids[:-1])):
        return ids
    return np.sort(ids)


def shared_ids(source: EmbeddingStore, target: EmbeddingStore) -> np.ndarray:
    """Ids present in both stores, sorted (a str array).

    Joined on the stores' sorted fixed-width byte keys (``id_index()``, sorted once per store
    and reused by every lookup of the fit): UTF-8 byte order is code-point order, so the
    result is what sorting the decoded ids gives, without decoding every id to a Python str.
    """
    if hasattr(source, "id_index") and hasattr(target, "id_index"):
        a, b = source.id_index().sorted, target.id_index().sorted
        if len(a) > len(b):
            a, b = b, a
        at = np.minimum(np.searchsorted(b, a), max(len(b) - 1, 0))
        common = _as_str(a[b[at] == a]) if len(b) else a[:0].astype("U1")
    else:
        common = np.intersect1d(source.ids.astype(str), target.ids.astype(str))
    if len(common) == 0:
        raise UsageError(
            f"{source.path} and {target.path} share no ids: anchors must be the same samples "
            "embedded by both models (or give --ids FILE)"
        )
    return common


def anchor_pool(
    source: EmbeddingStore, target: EmbeddingStore, anchors: str | Path | Sequence[str] | None
) -> np.ndarray:
    """The candidate anchors: the ids both stores share, or the given list (checked in both)."""
    if anchors is None:
        return shared_ids(source, target)
    ids = read_id_file(anchors) if isinstance(anchors, str | Path) else list(dict.fromkeys(anchors))
    for store in (source, target):
        rows_of(store, ids)  # raises naming a few missing ids
    return np.sort(np.asarray(ids, dtype=str))


def split_holdout(
    ids: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(fit pool, held-out ids): a seeded draw over the sorted ids."""
    if not 0.0 <= fraction < 1.0:
        raise UsageError(f"holdout (--holdout) must be in [0, 1), got {fraction}")
    ids = _sorted_str(ids)
    n_hold = int(round(fraction * len(ids)))
    if fraction > 0 and len(ids) >= 4:
        n_hold = max(n_hold, 2)
    if n_hold == 0:
        return ids, ids[:0]
    perm = np.random.default_rng(seed).permutation(len(ids))
    # ids are sorted, so sorted positions give sorted ids: one copy each, no string sort.
    held = ids[np.sort(perm[:n_hold])]
    rest = ids[np.sort(perm[n_hold:])]
    return rest, held


def fold_of(ids: Sequence[str], n_folds: int, seed: int) -> np.ndarray:
    """A fold for each id from a hash of (seed, id): independent of row order."""
    salt = f"{seed}:".encode()
    return np.fromiter(
        (zlib.crc32(salt + str(i).encode()) % n_folds for i in ids), dtype=np.int64, count=len(ids)
    )


def select(
    ids: np.ndarray,
    n: int | None,
    *,
    strategy: str = "random",
    seed: int = 0,
    labels: np.ndarray | None = None,
    embeddings: np.ndarray | None = None,
) -> np.ndarray:
    """Choose ``n`` of ``ids`` (sorted output). ``labels`` / ``embeddings`` are aligned with ``ids``.

    random: a seeded draw. stratified: the label proportions of the pool (largest remainders,
    every label at least once when n allows). farthest: k-centre greedy on cosine distance from
    a seeded start. kmeans: k-means centres (on L2-normalised embeddings), each replaced by its
    nearest real sample.
    """
    if strategy not in STRATEGIES:
        raise UsageError(f"unknown anchor strategy {strategy!r}: choose one of {', '.join(STRATEGIES)}")
    ids = np.asarray(ids)
    if ids.dtype.kind != "U":
        ids = ids.astype(str)
    if n is None or n >= len(ids):
        if n is not None and n > len(ids):
            raise UsageError(
                f"--n-anchors {n} but only {len(ids)} anchors are available (after the holdout): "
                "lower --n-anchors or --holdout"
            )
        return _sorted_str(ids)
    if n < 1:
        raise UsageError(f"n_anchors (--n-anchors) must be at least 1, got {n}")
    if len(ids) > 1 and not bool(np.all(ids[1:] >= ids[:-1])):
        order = np.argsort(ids, kind="stable")
        ids = ids[order]
        labels = None if labels is None else np.asarray(labels)[order]
        embeddings = None if embeddings is None else np.asarray(embeddings)[order]
    rng = np.random.default_rng(seed)
    if strategy == "random":
        picked = rng.choice(len(ids), size=n, replace=False)
    elif strategy == "stratified":
        if labels is None:
            raise UsageError("strategy 'stratified' needs labels: the store has none; use random")
        picked = _stratified(labels, n, rng)
    else:
        if embeddings is None:
            raise UsageError(f"strategy {strategy!r} needs embeddings")
        cand = np.arange(len(ids))
        if len(cand) > MAX_CANDIDATES:
            cand = np.sort(rng.choice(len(ids), size=MAX_CANDIDATES, replace=False))
        E = l2_normalize(embeddings[cand], dtype=np.float32)
        local = _farthest(E, n, rng) if strategy == "farthest" else _kmeans(E, n, seed)
        picked = cand[local]
    return np.sort(ids[np.asarray(picked, dtype=np.int64)])


def _stratified(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    classes, inverse = np.unique(labels.astype(str), return_inverse=True)
    counts = np.bincount(inverse)
    quota = counts / counts.sum() * n
    take = np.floor(quota).astype(int)
    if n >= len(classes):
        take = np.maximum(take, 1)
    take = np.minimum(take, counts)
    while take.sum() > n:
        take[np.argmax(take - quota)] -= 1
    rem = quota - take
    while take.sum() < n:
        room = np.where(take < counts, rem, -np.inf)
        k = int(np.argmax(room))
        take[k] += 1
        rem[k] -= 1
    out = [rng.choice(np.flatnonzero(inverse == c), size=t, replace=False) for c, t in enumerate(take)]
    return np.concatenate(out)


def _farthest(E: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    first = int(rng.integers(len(E)))
    chosen = [first]
    dist = 1.0 - E @ E[first]
    dist[first] = -np.inf
    for _ in range(n - 1):
        nxt = int(np.argmax(dist))
        chosen.append(nxt)
        dist = np.minimum(dist, 1.0 - E @ E[nxt])
        dist[chosen] = -np.inf
    return np.array(chosen)


def _kmeans(E: np.ndarray, n: int, seed: int) -> np.ndarray:
    from sklearn.cluster import KMeans, MiniBatchKMeans

    model = (KMeans if len(E) <= 20_000 else MiniBatchKMeans)(
        n_clusters=n, n_init=1, random_state=seed
    )
    model.fit(E)
    sims = E @ model.cluster_centers_.T.astype(np.float32)
    chosen: list[int] = []
    taken: set[int] = set()
    # Each centre takes its nearest sample not already taken, so n centres give n anchors.
    for c in np.argsort(-sims.max(axis=0)):
        for i in np.argsort(-sims[:, c]):
            if int(i) not in taken:
                taken.add(int(i))
                chosen.append(int(i))
                break
    return np.array(chosen)


def selection_label_use(strategy: str, n: int, n_pool: int, labels_of: str | None = None) -> str | None:
    """The labels a choice of ``n`` of ``n_pool`` ids by ``strategy`` used (None: none); an id
    file records it (``# label_use:``) so that a map fitted on the file records it in turn.
    Choosing all of them is no choice: no label is read then."""
    return stratified_anchors(labels_of) if strategy == "stratified" and n < n_pool else None


def select_from_store(
    store: EmbeddingStore,
    n: int,
    *,
    strategy: str = "random",
    seed: int = 0,
    ids: np.ndarray | None = None,
) -> np.ndarray:
    """Select anchors among ``ids`` (default: all) of one store; used by ``stitch anchors select``."""
    pool = np.sort((store.ids if ids is None else np.asarray(ids)).astype(str))
    labels = embeddings = None
    if strategy == "stratified":
        labels = store.labels
        if labels is None:
            raise UsageError(f"{store.path} has no labels: strategy 'stratified' needs them; use random")
        labels = labels[rows_of(store, pool)]
    elif strategy in ("farthest", "kmeans"):
        if len(pool) > MAX_CANDIDATES:
            # Reading a million rows to pick a few hundred is wasteful: draw candidates first.
            rng = np.random.default_rng(seed)
            pool = np.sort(rng.choice(pool, MAX_CANDIDATES, replace=False))
        embeddings = store.read(rows_of(store, pool))
    if embeddings is not None:
        require_finite(embeddings, pool, store.path)
    return select(pool, n, strategy=strategy, seed=seed, labels=labels, embeddings=embeddings)

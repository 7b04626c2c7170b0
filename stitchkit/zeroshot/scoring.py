"""Zero-shot classification of a store through prompts: cosine or head scoring, streamed.

Composition: query store --(map, optional)--> image space of the head --(head)--> logits
against the prompts' text embeddings. Every arrow is checked: the query must be in the map's
source space, the map's target space must be the head's image space and the prompts' text
model the head's text space (with cosine scoring: the image side must be in the text space
itself, as the unimodal route of the second paper does). A mismatch is one line, unless
``force``; widths that differ can never be forced.

Scores per class:

* head, multi-class: each class's logit is the mean over its positive prompts; softmax over
  classes. Multi-label: sigmoid(positive logit − negative logit) per finding.
* cosine: each class is the normalised mean of its normalised prompt embeddings (CLIP's
  prompt ensembling); logits are cosine / ``temperature``; then as above.

Ranking: metrics rank by log-odds (multi-class) or logit differences (multi-label), which never
saturate; the per-sample file holds them beside the probabilities, so an AUC recomputed from
the file is the one reported. The default cosine temperature (0.05) keeps float32
probabilities off exactly 0 and 1 for cosine gaps up to 0.8.

Tokens: a head trained with image tokens needs a query store with tokens (one clear line
otherwise, or ``image_tokens=False`` to score on globals on purpose); through a map they are
mapped per token (:mod:`stitchkit.maps.tokens`), in chunks of bounded size.

Label-free prior adjustment (``prior="em"``, Saerens et al. 2002): the class priors of the
unlabelled query set are estimated by EM on the posteriors and the posteriors re-weighted by
them. It moves the decision (argmax) and calibration, never a sample's rank within a class
for two classes; no label is used.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UsageError
from ..fileio import atomic_output, check_writable_dir
from ..maps.functional import l2_normalize
from ..store import EmbeddingStore, check_same_space, require_finite
from ..store.pooling import (
    check_pool_by,
    group_rows,
    pool_embeddings,
    pool_labels,
    pool_tokens,
    store_groups,
)
from .metrics import evaluate, truth_matrix
from .prompts import PromptSet, check_for_mode

DEFAULT_TEMPERATURE = 0.05
PRIORS = ("none", "em", "mixture")
ProgressFn = Callable[[int, int], None]
SCORINGS = ("head", "cosine")


# -- spaces --------------------------------------------------------------------------------
# -- prompt embeddings ---------------------------------------------------------------------
@dataclass
class PromptEmbeddings:
    texts: list[str]
    glob: np.ndarray
    tokens: np.ndarray | None
    mask: np.ndarray | None
    space: dict[str, Any]
    source: str


def cache_dir() -> Path:
    root = os.environ.get("STITCHKIT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "stitchkit")
    return Path(root) / "prompts"


def _read_prompt_store(path: Path, texts: list[str], tokens: bool) -> PromptEmbeddings | None:
    with EmbeddingStore(path) as store:
        have = store.texts if store.texts is not None else store.ids
        index = {t: i for i, t in enumerate(have)}
        missing = [t for t in texts if t not in index]
        if missing:
            return None
        rows = np.array([index[t] for t in texts], dtype=np.int64)
        glob = store.read(rows)
        tok = mask = None
        if tokens:
            if not store.has_tokens:
                return None
            tok, mask = store.read_tokens(rows)
        return PromptEmbeddings(texts, glob, tok, mask, store.space(), str(path))


def embed_prompts(
    texts: list[str],
    *,
    text_model: str | None = None,
    prompt_store: str | os.PathLike | None = None,
    tokens: bool = False,
    use_cache: bool = True,
) -> PromptEmbeddings:
    """Prompt embeddings: from ``prompt_store`` if it holds them all, else embedded with
    ``text_model`` and written to ``prompt_store`` (or a cache keyed by model and texts)."""
    if prompt_store is not None and Path(prompt_store).exists():
        found = _read_prompt_store(Path(prompt_store), texts, tokens)
        if found is not None:
            return found
        if text_model is None:
            raise UsageError(
                f"prompt store {prompt_store} lacks some prompts (or their tokens): give "
                "--text-model to embed them"
            )
    if text_model is None:
        raise UsageError("give --text-model (e.g. minilm) or a --prompt-store to embed the prompts")
    key = hashlib.sha256(json.dumps([text_model, tokens, texts]).encode()).hexdigest()[:20]
    target = Path(prompt_store) if prompt_store is not None else cache_dir() / f"{key}.h5"
    if prompt_store is None and use_cache and target.exists():
        found = _read_prompt_store(target, texts, tokens)
        if found is not None:
            return found
    from ..embed import embed_texts
    from ..encoders import load_encoder

    encoder = load_encoder(text_model, device="cpu")
    emb = embed_texts(encoder, texts, tokens=tokens)
    space = encoder.space()
    if prompt_store is not None or use_cache:
        _write_prompt_store(target, texts, emb, space)
    return PromptEmbeddings(texts, emb.embeddings, emb.tokens, emb.mask, space, text_model)


def _write_prompt_store(path: Path, texts: list[str], emb: Any, space: dict[str, Any]) -> None:
    from ..store import StoreWriter
    from ..store.store import base_attrs

    path.parent.mkdir(parents=True, exist_ok=True)
    shape = None if emb.tokens is None else (emb.tokens.shape[1], emb.tokens.shape[2])
    attrs = base_attrs(modality="text", model_spec=space.get("model_spec"),
                       weights_sha256=space.get("weights_sha256"), input="prompts")
    with StoreWriter(path, dim=emb.embeddings.shape[1], attrs=attrs, columns=["texts"],
                     token_shape=shape) as w:
        w.append([f"p{i}" for i in range(len(texts))], emb.embeddings, columns={"texts": texts},
                 tokens=emb.tokens, tokens_mask=emb.mask)


# -- scorers -------------------------------------------------------------------------------
def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _log_odds(logits: np.ndarray) -> np.ndarray:
    """log(p_c / (1 - p_c)) of the softmax: c's logit minus the log-sum-exp of the others.

    Monotone in the probability but it never saturates: probabilities round to exactly 0 or 1
    in floating point for confident samples, and those ties would distort AUC.
    """
    z = logits.astype(np.float64)
    n, c = z.shape
    rows = np.arange(n)
    # Two (n, C) exp passes instead of one per class: for every class but the row's top one,
    # the others' max is the top logit and their sum is the total minus its own term (≥ 1, so
    # no cancellation); the top class gets its others' sum directly.
    top = z.argmax(axis=1)
    m1 = z[rows, top]
    e = np.exp(z - m1[:, None])
    with np.errstate(divide="ignore"):  # the top column may round to log(0): replaced below
        out = z - m1[:, None] - np.log(e.sum(axis=1, keepdims=True) - e)
    rest = z.copy()
    rest[rows, top] = -np.inf
    m2 = rest.max(axis=1)
    out[rows, top] = m1 - m2 - np.log(np.exp(rest - m2[:, None]).sum(axis=1))
    return out


@dataclass
class Scorer:
    """Turns (mapped) image embeddings into per-class scores and probabilities.

    The scores are log-odds (multi-class) or positive-minus-negative logits (multi-label);
    metrics rank by them, outputs show both.
    """

    prompts: PromptSet
    text: PromptEmbeddings
    head: Any = None  # stitchkit.head.Head
    temperature: float = DEFAULT_TEMPERATURE
    image_tokens: bool = True  # False: score a token-trained head on globals, on purpose

    def __post_init__(self) -> None:
        index = {t: i for i, t in enumerate(self.text.texts)}
        self._pos = [np.array([index[t] for t in c.positive]) for c in self.prompts.classes]
        multilabel = self.prompts.mode == "multilabel"
        self._neg = [np.array([index[t] for t in c.negative]) for c in self.prompts.classes] if multilabel else []
        if self.head is None:
            unit = l2_normalize(self.text.glob)
            self._cpos = l2_normalize(np.stack([unit[i].mean(axis=0) for i in self._pos]))
            if multilabel:
                self._cneg = l2_normalize(np.stack([unit[i].mean(axis=0) for i in self._neg]))

    @property
    def uses_image_tokens(self) -> bool:
        return self.head is not None and self.head.uses_image_tokens_ and self.image_tokens

    shift: np.ndarray | None = None  # log prior ratio added to class logits (prior="em")
    scale: float = 1.0  # logits multiplied by this first (prior="mixture")

    def class_logits(self, glob: np.ndarray, tokens: np.ndarray | None = None,
                     mask: np.ndarray | None = None) -> np.ndarray:
        """Multi-class logits per class (before any prior shift)."""
        shift, self.shift = self.shift, None
        try:
            return self._pos_logits(glob, tokens, mask)[0]
        finally:
            self.shift = shift

    def _pos_logits(self, glob: np.ndarray, tokens: np.ndarray | None,
                    mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        multilabel = self.prompts.mode == "multilabel"
        if self.head is None:
            unit = l2_normalize(glob.astype(np.float32, copy=False))
            pos = unit @ self._cpos.T / self.temperature
            neg = unit @ self._cneg.T / self.temperature if multilabel else None
        else:
            t = self.text
            use_tt = self.head.uses_text_tokens_
            logits = self.head.score(glob, t.glob, tokens, mask,
                                     t.tokens if use_tt else None, t.mask if use_tt else None)
            pos = np.stack([logits[:, i].mean(axis=1) for i in self._pos], axis=1)
            neg = np.stack([logits[:, i].mean(axis=1) for i in self._neg], axis=1) if multilabel else None
        return pos, neg

    def __call__(self, glob: np.ndarray, tokens: np.ndarray | None = None,
                 mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        multilabel = self.prompts.mode == "multilabel"
        pos, neg = self._pos_logits(glob, tokens, mask)
        if self.shift is not None and not multilabel:
            pos = pos.astype(np.float64) * self.scale + self.shift
        if multilabel:
            diff = pos - neg
            return diff, _sigmoid(diff)
        return _log_odds(pos), _softmax(pos.astype(np.float64)).astype(np.float32)


def em_priors(logits: np.ndarray, *, max_iter: int = 200, tol: float = 1e-8
               ) -> tuple[np.ndarray, int]:
    """Class priors of an unlabelled set by EM (Saerens, Latinne & Decaestecker 2002).

    ``logits`` (N, C) give posteriors under equal training priors (prompt scores carry no
    prior). Returns the priors and the iterations used; no label is involved.
    """
    z = logits.astype(np.float64)
    c = z.shape[1]
    base = _softmax(z)
    prior = np.full(c, 1.0 / c)
    for it in range(1, max_iter + 1):
        w = base * (prior * c)  # p(c|x) re-weighted by the ratio of new to training priors
        post = w / w.sum(axis=1, keepdims=True)
        new = post.mean(axis=0)
        if np.abs(new - prior).max() < tol:
            return new, it
        prior = new
    return prior, max_iter


def mixture_calibration(logits: np.ndarray, *, max_iter: int = 500, tol: float = 1e-10
                        ) -> tuple[float, float, np.ndarray, int]:
    """Two classes: a two-Gaussian mixture (shared variance) fitted by EM to the unlabelled
    log-odds ``s = z1 − z0``; returns ``(a, b, priors, iterations)`` with the mixture's
    posterior log-odds ``a·s + b``.

    For when the scores rank well but are not calibrated (a head's per-text bias puts every
    query on one side, and Saerens' EM, which trusts the posteriors, then drives one prior to
    1). The component with the higher mean is the second class; ``a > 0``, so the ranking
    and AUC are unchanged. No label is used.
    """
    z = logits.astype(np.float64)
    sc = z[:, 1] - z[:, 0]
    lo, hi = np.quantile(sc, [0.25, 0.75])
    mu = np.array([lo, hi])
    var = max(float(sc.var()) / 4, 1e-12)
    pi = np.array([0.5, 0.5])
    iterations = 0
    for iterations in range(1, max_iter + 1):  # noqa: B007 - the count is returned
        logp = np.log(pi) - 0.5 * (sc[:, None] - mu) ** 2 / var
        logp -= logp.max(axis=1, keepdims=True)
        r = np.exp(logp)
        r /= r.sum(axis=1, keepdims=True)
        nk = r.sum(axis=0) + 1e-12
        new_mu = (r * sc[:, None]).sum(axis=0) / nk
        new_var = max(float((r * (sc[:, None] - new_mu) ** 2).sum() / len(sc)), 1e-12)
        new_pi = nk / len(sc)
        done = np.abs(new_mu - mu).max() < tol and abs(new_var - var) < tol
        mu, var, pi = new_mu, new_var, new_pi
        if done:
            break
    if mu[1] < mu[0]:  # keep the second class on the side of higher scores
        mu, pi = mu[::-1], pi[::-1]
    a = (mu[1] - mu[0]) / var
    b = np.log(pi[1] / pi[0]) - (mu[1] ** 2 - mu[0] ** 2) / (2 * var)
    return float(a), float(b), pi, iterations


# -- output --------------------------------------------------------------------------------
class _ScoreWriter:
    """Streams per-sample scores to CSV or HDF5 (by suffix), appearing atomically."""

    def __init__(self, path: Path, classes: list[str], meta: dict[str, Any], with_labels: bool):
        self.path, self.classes, self.meta, self.with_labels = path, classes, meta, with_labels
        self.hdf5 = path.suffix.lower() in (".h5", ".hdf5")

    def __enter__(self) -> _ScoreWriter:
        self._atomic = atomic_output(self.path)
        tmp = self._atomic.__enter__()
        if self.hdf5:
            import h5py

            from ..store.store import STR

            self._h5 = h5py.File(tmp, "w")
            c = len(self.classes)
            self._h5.create_dataset("ids", (0,), maxshape=(None,), dtype=STR, chunks=(4096,))
            self._h5.create_dataset("labels", (0,), maxshape=(None,), dtype=STR, chunks=(4096,))
            self._h5.create_dataset("scores", (0, c), maxshape=(None, c), dtype="f4", chunks=(4096, c))
            self._h5.create_dataset("logits", (0, c), maxshape=(None, c), dtype="f4", chunks=(4096, c))
            self._h5.attrs["format"] = "stitchkit.scores"
            self._h5.attrs["classes"] = json.dumps(self.classes)
            self._h5.attrs["meta"] = json.dumps(self.meta, default=str)
            self._n = 0
        else:
            self._fh = open(tmp, "w", newline="", encoding="utf-8")
            self._csv = csv.writer(self._fh)
            # Probabilities per class, then the scores metrics rank by (log-odds or logit
            # differences) as "score:<class>": probabilities alone round to 0 or 1 and tie.
            head = ["id", *(["label"] if self.with_labels else []), *self.classes,
                    *(f"score:{c}" for c in self.classes), "predicted"]
            self._csv.writerow(head)
        return self

    def write(self, ids: np.ndarray, labels: np.ndarray | None, logits: np.ndarray, probs: np.ndarray,
              predicted: list[str]) -> None:
        if self.hdf5:
            a, b = self._n, self._n + len(ids)
            for name in ("ids", "labels", "scores", "logits"):
                self._h5[name].resize(b, axis=0)
            self._h5["ids"][a:b] = np.asarray(ids, dtype=object)
            self._h5["labels"][a:b] = np.asarray(labels if labels is not None else [""] * len(ids), dtype=object)
            self._h5["scores"][a:b] = probs
            self._h5["logits"][a:b] = logits
            self._n = b
            return
        buf = io.StringIO()
        w = csv.writer(buf)
        for i in range(len(ids)):
            row = [ids[i], *([labels[i]] if self.with_labels else []),
                   *(f"{p:.9g}" for p in probs[i]), *(f"{z:.9g}" for z in logits[i]), predicted[i]]
            w.writerow(row)
        self._fh.write(buf.getvalue())

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: object) -> None:
        try:
            if self.hdf5:
                self._h5.close()
            else:
                self._fh.close()  # flushes the last rows: a full disk often fails only here
        except BaseException as failure:
            # The temporary is broken: never move it into place over earlier scores.
            self._atomic.__exit__(type(failure), failure, failure.__traceback__)
            raise
        self._atomic.__exit__(exc_type, exc, tb)


# -- classification ------------------------------------------------------------------------
@dataclass
class ClassifyResult:
    n: int
    classes: list[str]
    mode: str
    scoring: str
    output: str | None
    composition: dict[str, Any]
    metrics: dict[str, Any] | None
    seconds: float
    samples_per_s: float
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _chunks(store: EmbeddingStore, rows: np.ndarray, pool_by: str | None, chunk_size: int
            ) -> Iterator[tuple[np.ndarray, list[np.ndarray] | None]]:
    """Row blocks of about ``chunk_size``; with pooling, whole groups per block."""
    if pool_by is None:
        for a in range(0, len(rows), chunk_size):
            yield rows[a:a + chunk_size], None
        return
    groups = store_groups(store)
    keys, members = group_rows(groups[rows])
    block: list[np.ndarray] = []
    size = 0
    for m in members:
        block.append(rows[m])
        size += len(m)
        if size >= chunk_size:
            yield np.concatenate(block), block
            block, size = [], 0
    if block:
        yield np.concatenate(block), block


def classify_store(
    query: str | os.PathLike | EmbeddingStore,
    prompts: PromptSet,
    *,
    text_model: str | None = None,
    prompt_store: str | os.PathLike | None = None,
    map_path: str | os.PathLike | None = None,
    head_path: str | os.PathLike | None = None,
    scoring: str | None = None,
    out: str | os.PathLike | None = None,
    ids: list[str] | None = None,
    pool_by: str | None = None,
    force: bool = False,
    chunk_size: int = 8192,
    n_boot: int = 1000,
    seed: int = 0,
    temperature: float = DEFAULT_TEMPERATURE,
    progress: ProgressFn | None = None,
    image_tokens: bool = True,
    prior: str = "none",
) -> ClassifyResult:
    """Score every sample of ``query`` against ``prompts``; metrics where labels exist.

    >>> r = classify_store("k-lite0.h5", load_prompts("pneumonia"), text_model="minilm",
    ...                    map_path="lite0-to-lite2.map", head_path="head.st")  # doctest: +SKIP
    """
    t0 = time.perf_counter()
    check_for_mode(prompts)
    pool_by = check_pool_by(pool_by)
    scoring = scoring or ("head" if head_path else "cosine")
    if scoring not in SCORINGS:
        raise UsageError(f"--scoring must be one of {', '.join(SCORINGS)}, got {scoring!r}")
    if scoring == "head" and head_path is None:
        raise UsageError("head scoring needs --head HEAD (or use --scoring cosine)")
    if scoring == "cosine" and head_path is not None:
        raise UsageError("--head and --scoring cosine exclude each other: choose one")
    if prior not in PRIORS:
        raise UsageError(f"--prior must be one of {', '.join(PRIORS)}, got {prior!r}")
    if temperature <= 0:
        raise UsageError(f"--temperature must be positive, got {temperature}")
    if out is not None:
        check_writable_dir(out)
    store = query if isinstance(query, EmbeddingStore) else EmbeddingStore(query)
    store.check_unique_ids()  # scores are written and joined by id
    notes: list[str] = []

    mapper = None
    image_space = store.space()
    composition: dict[str, Any] = {"query": {"path": str(store.path), **store.space()}}
    if map_path is not None:
        from ..maps import load_map

        mapper = load_map(map_path)
        check_same_space(mapper.source_space_, store.space(), expected_what=f"the map's source side ({map_path})",
                    got_what=f"query store {store.path}", force=force)
        image_space = dict(mapper.target_space_)
        composition["map"] = {"path": str(map_path), "source": mapper.source_space_,
                              "target": mapper.target_space_}

    head = None
    if head_path is not None:
        from ..head import Head

        head = Head.load(head_path)
        composition["head"] = {"path": str(head_path), "image": head.image_space_, "text": head.text_space_}
        check_same_space(head.image_space_, image_space,
                    expected_what=f"the head's image space ({head_path})",
                    got_what="the map's target space" if mapper else f"query store {store.path}",
                    force=force)
        if head.meta_.get("pool_by") and not pool_by:
            notes.append("the head was trained on pooled studies; consider --pool-by group")
        if head.uses_image_tokens_ and image_tokens and not store.has_tokens:
            raise UsageError(
                f"head {head_path} was trained with image tokens but query store {store.path} has "
                "none: embed it with `stitch embed --tokens` (and `stitch apply` keeps them), or "
                "pass --no-image-tokens to score on global vectors only"
            )
        if head.uses_image_tokens_ and not image_tokens:
            notes.append("--no-image-tokens: the head was trained with image tokens and now scores "
                         "global vectors only")

    text = embed_prompts(prompts.texts(), text_model=text_model, prompt_store=prompt_store,
                         tokens=head is not None and head.uses_text_tokens_)
    composition["prompts"] = {"source": text.source, **text.space}
    if head is not None:
        check_same_space(head.text_space_, text.space, expected_what=f"the head's text space ({head_path})",
                    got_what=f"the prompts' text model ({text.source})", force=force)
    else:
        check_same_space(text.space, image_space, expected_what=f"the prompts' text space ({text.source})",
                    got_what="the map's target space" if mapper else f"query store {store.path}",
                    force=force)
    scorer = Scorer(prompts, text, head, temperature, image_tokens)
    if scorer.uses_image_tokens:
        from ..maps import tokens as T

        if mapper is not None:
            T.check_token_width(mapper, store.token_shape, f"query store {store.path}")
            probe = np.arange(min(len(store), 16))
            notes.append(T.token_note(mapper, T.pooling_relation(store.read(probe),
                                                                  *T.read_tokens(store, probe))))
            chunk_size = T.rows_per_chunk(store.token_shape, mapper.n_features_out_, chunk_size)
        else:
            chunk_size = T.rows_per_chunk(store.token_shape, store.token_shape[1], chunk_size)

    rows = np.arange(len(store)) if ids is None else np.sort(store.index_of(ids))
    labels_all = store.labels
    with_labels = labels_all is not None and any(str(x) for x in labels_all[rows])
    classes = prompts.names
    keep_logits: list[np.ndarray] = []
    keep_probs: list[np.ndarray] = []
    keep_labels: list[np.ndarray] = []
    n_done = 0
    n_total = len(rows) if pool_by is None else len(group_rows(store.groups[rows])[0]) if store.groups is not None else 0
    meta = {"mode": prompts.mode, "scoring": scoring, "prompts": prompts.source,
            "composition": composition}
    writer = _ScoreWriter(Path(out), classes, meta, with_labels) if out is not None else None

    def blocks() -> Iterator[tuple[np.ndarray, np.ndarray | None, np.ndarray,
                                   np.ndarray | None, np.ndarray | None]]:
        """(ids, labels, image globals, tokens, mask) per block, mapped and pooled."""
        for block, members in _chunks(store, rows, pool_by, chunk_size):
            glob = store.read(block)
            require_finite(glob, store.ids_at(block), store.path)
            tok = mask = None
            if scorer.uses_image_tokens:
                tok, mask = T.read_tokens(store, block)
            if mapper is not None:
                glob = mapper.transform(glob).astype(np.float32, copy=False)
                if tok is not None:
                    tok = T.map_tokens(mapper, tok, mask)
            block_ids = store.ids_at(block)  # not store.ids: no decoded copy of all N ids
            block_labels = labels_all[block] if with_labels else None
            if members is not None:
                local, pos = [], 0
                for m in members:
                    local.append(np.arange(pos, pos + len(m)))
                    pos += len(m)
                block_ids = store.groups[block][[m[0] for m in local]]
                block_labels = pool_labels(block_labels, local) if with_labels else None
                if tok is not None and mask is not None:
                    tok, mask = pool_tokens(tok, mask, local)
                glob = pool_embeddings(glob, local)
            yield block_ids, block_labels, glob, tok, mask

    if prior == "em":
        if prompts.mode != "multiclass":
            raise UsageError("--prior em adjusts multi-class priors: use it with --mode multiclass")
        # First pass: the class logits of every query (N × C, small), then EM on them.
        z = np.concatenate([scorer.class_logits(g, t, mk) for _, _, g, t, mk in blocks()])
        est, iters = em_priors(z)
        scorer.shift = np.log(est * len(est))
        composition["prior"] = {"method": "em (Saerens et al. 2002), label-free",
                                "priors": dict(zip(prompts.names, map(float, est), strict=True)),
                                "iterations": iters}
        notes.append("class priors estimated on the unlabelled query set by EM: "
                     + ", ".join(f"{c} {p:.3f}" for c, p in zip(prompts.names, est, strict=True)))
    elif prior == "mixture":
        if prompts.mode != "multiclass" or len(prompts.names) != 2:
            raise UsageError("--prior mixture calibrates two classes: use it with two multi-class classes")
        z = np.concatenate([scorer.class_logits(g, t, mk) for _, _, g, t, mk in blocks()])
        a, b, est, iters = mixture_calibration(z)
        scorer.scale, scorer.shift = a, np.array([0.0, b])
        composition["prior"] = {"method": "two-Gaussian mixture on the log-odds by EM, label-free",
                                "priors": dict(zip(prompts.names, map(float, est), strict=True)),
                                "scale": a, "offset": b, "iterations": iters}
        notes.append("scores calibrated on the unlabelled query set by a two-Gaussian mixture: priors "
                     + ", ".join(f"{c} {p:.3f}" for c, p in zip(prompts.names, est, strict=True)))
    if progress:
        progress(0, n_total)
    try:
        if writer:
            writer.__enter__()
        for block_ids, block_labels, glob, tok, mask in blocks():
            logits, probs = scorer(glob, tok, mask)
            predicted = _predicted(probs, classes, prompts.mode)
            if writer:
                writer.write(block_ids, block_labels, logits, probs, predicted)
            if with_labels:
                keep_logits.append(logits.astype(np.float32))  # what the score file holds
                keep_probs.append(probs)
                keep_labels.append(np.asarray(block_labels, dtype=object))
            n_done += len(block_ids)
            if progress:
                progress(n_done, n_total)
        if writer:
            writer.__exit__(None, None, None)
    except BaseException as exc:
        if writer:
            writer.__exit__(type(exc), exc, exc.__traceback__)
        raise
    seconds = time.perf_counter() - t0

    metrics = None
    if with_labels and keep_probs:
        probs = np.concatenate(keep_probs)
        labels = np.concatenate(keep_labels)
        keep_probs.clear()  # the blocks are copied: free them before the metrics
        keep_labels.clear()
        truth = truth_matrix(labels, [c.matches for c in prompts.classes])  # once per distinct label
        known = labels != ""  # object array: elementwise, no (N,) unicode copy
        if prompts.mode == "multiclass":
            usable = known & (truth.sum(axis=1) == 1)
        else:
            usable = known
        if usable.sum() != len(labels):
            notes.append(f"{int(len(labels) - usable.sum())} samples have labels that match no single "
                         "class of the prompts and are left out of the metrics")
        if usable.any():
            ranking = np.concatenate(keep_logits)  # log-odds / logit differences
            keep_logits.clear()
            if not usable.all():  # (N, C) copies only where some samples are left out
                truth, probs, ranking = truth[usable], probs[usable], ranking[usable]
            metrics = evaluate(truth, probs, classes, mode=prompts.mode,
                               n_boot=n_boot, seed=seed, ranking=ranking)
    return ClassifyResult(
        n=n_done, classes=classes, mode=prompts.mode, scoring=scoring,
        output=str(out) if out is not None else None, composition=composition, metrics=metrics,
        seconds=seconds, samples_per_s=n_done / max(seconds, 1e-9), notes=notes,
    )


def _predicted(probs: np.ndarray, classes: list[str], mode: str) -> list[str]:
    if mode == "multiclass":
        return [classes[i] for i in probs.argmax(axis=1)]
    return ["|".join(c for c, p in zip(classes, row, strict=True) if p >= 0.5) for row in probs]

"""Scorers of image blocks against prompts (cosine, patch or a head), and label-free prior adjustment.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..maps.functional import l2_normalize
from .patches import PatchOptions, patch_similarity
from .prompt_cache import PromptEmbeddings
from .prompts import PromptSet

DEFAULT_TEMPERATURE = 0.05
PRIORS = ("none", "em", "mixture")
# patch: the cosine route's map applied to every patch token, token cosines pooled (.patches).
SCORINGS = ("head", "cosine", "patch")
# Multi-label scores: a finding's positive logit minus its negative one ("There is X." against
# "There is no X.", CARZero's form), or the positive logit alone.
MULTILABEL_RULES = ("contrast", "positive")


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
    multilabel_rule: str = "contrast"  # one of MULTILABEL_RULES
    patch: PatchOptions | None = None  # patch scoring (no head): how token similarities are pooled

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
    def positive_rows(self) -> list[np.ndarray]:
        """Each class's positive prompts: their rows of ``text``."""
        return self._pos

    @property
    def class_vectors(self) -> np.ndarray:
        """(C, D) each class's prompt ensemble, unit length (cosine and patch scoring)."""
        return self._cpos

    @property
    def uses_image_tokens(self) -> bool:
        if self.head is None:
            return self.patch is not None
        return self.head.uses_image_tokens_ and self.image_tokens

    shift: np.ndarray | None = None  # log prior ratio added to class logits (prior="em")
    scale: float = 1.0  # logits multiplied by this first (prior="mixture")

    def class_logits(self, glob: np.ndarray, tokens: np.ndarray | None = None,
                     mask: np.ndarray | None = None) -> np.ndarray:
        """Multi-class logits per class (before any prior shift)."""
        return self._pos_logits(glob, tokens, mask)[0]

    def _pos_logits(self, glob: np.ndarray, tokens: np.ndarray | None,
                    mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        multilabel = self.prompts.mode == "multilabel"
        if self.head is None and self.patch is not None:
            if tokens is None:
                raise ValueError("patch scoring needs the block's image tokens")
            # float32 like the cosine logits: the same score files, the same precision of ranking
            pos = (patch_similarity(glob, tokens, mask, self._cpos, self.patch) / self.temperature).astype(np.float32)
            neg = (patch_similarity(glob, tokens, mask, self._cneg, self.patch) / self.temperature
                   ).astype(np.float32) if multilabel else None
        elif self.head is None:
            unit = l2_normalize(glob.astype(np.float32, copy=False))
            pos = unit @ self._cpos.T / self.temperature
            neg = unit @ self._cneg.T / self.temperature if multilabel else None
        else:
            t = self.text
            use_tt = self.head.uses_text_tokens_
            logits = self.head.class_logits(glob, t.glob, self._pos + self._neg, tokens, mask,
                                            t.tokens if use_tt else None, t.mask if use_tt else None)
            pos, neg = logits[:, : len(self._pos)], logits[:, len(self._pos):] if multilabel else None
        return pos, neg

    def __call__(self, glob: np.ndarray, tokens: np.ndarray | None = None,
                 mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        multilabel = self.prompts.mode == "multilabel"
        pos, neg = self._pos_logits(glob, tokens, mask)
        if self.shift is not None and not multilabel:
            pos = pos.astype(np.float64) * self.scale + self.shift
        if multilabel:
            diff = pos - neg if self.multilabel_rule == "contrast" else pos
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


class HeadEnsemble:
    """Several heads trained in the same spaces, scored as one: the mean of their logits.

    The heads' class logits are averaged (each head's own :meth:`Head.class_logits`); for two
    classes that is the mean of the heads' log-odds. The rule is
    for seed ensembles: on 217 covid-notes pairs single token heads swing from AUC 0.38 to
    0.80 with the seed, five averaged give 0.78 (docs/head.md). The heads must agree on their
    image and text spaces and on whether they use tokens.
    """

    def __init__(self, heads: list[Any], paths: list[str]) -> None:
        first = heads[0]
        for h, p in zip(heads[1:], paths[1:], strict=True):
            for what, a, b in (("image space", first.image_space_, h.image_space_),
                               ("text space", first.text_space_, h.text_space_),
                               ("image tokens", first.uses_image_tokens_, h.uses_image_tokens_),
                               ("text tokens", first.uses_text_tokens_, h.uses_text_tokens_)):
                if a != b:
                    from ..errors import UsageError

                    raise UsageError(f"heads {paths[0]} and {p} differ in their {what}: "
                                     "an ensemble averages heads trained in the same spaces")
        self.heads = heads
        self.image_space_ = first.image_space_
        self.text_space_ = first.text_space_
        self.meta_ = first.meta_
        self.uses_image_tokens_ = first.uses_image_tokens_
        self.uses_text_tokens_ = first.uses_text_tokens_

    def to(self, device: Any) -> HeadEnsemble:
        for h in self.heads:
            h.to(device)
        return self

    def score(self, *args: Any, **kwargs: Any) -> np.ndarray:
        return np.mean([h.score(*args, **kwargs) for h in self.heads], axis=0)

    def class_logits(self, *args: Any, **kwargs: Any) -> np.ndarray:
        return np.mean([h.class_logits(*args, **kwargs) for h in self.heads], axis=0)


def load_heads(paths: Any) -> Any:
    """One head file (a ``Head``) or several (a :class:`HeadEnsemble`)."""
    from ..head import Head

    if isinstance(paths, (str, bytes)) or not hasattr(paths, "__iter__"):
        return Head.load(paths)
    paths = [str(p) for p in paths]
    if len(paths) == 1:
        return Head.load(paths[0])
    return HeadEnsemble([Head.load(p) for p in paths], paths)

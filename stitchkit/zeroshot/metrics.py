"""Classification metrics with bootstrap confidence intervals.

Thresholds, stated once: in multi-class mode the prediction is the class of highest
probability (no threshold); in multi-label mode a finding is called present when its positive
prompt outscores its negative prompt, i.e. probability ≥ 0.5. AUC needs no threshold, which is
why it is the headline figure. Point estimates use every sample; AUC is scikit-learn's
``roc_auc_score`` (ties count half).

Confidence intervals are percentile bootstrap intervals over samples (default 1,000
resamples, 95 %), seeded, computed without a Python loop over resamples × classes: each
resample is a vector of counts (how often each sample is drawn), the scores of each class are
sorted once, and a resample's AUC is a weighted cumulative count over that fixed order. Up to
:data:`EXACT_MAX` samples this is the ordinary bootstrap. Above it, an exact bootstrap costs
more than scoring the samples did (1,000 × N × classes gathers), so the intervals come from the
bag of little bootstraps (Kleiner, Talwalkar, Sarkar & Jordan, JRSS-B 2014): ``s`` random
subsets of ``b`` = max(EXACT_MAX, N^0.6) samples, each resampled to the full size N by
Poisson(N / b) counts (n_boot / s resamples per subset); each subset's spread of draws around
its own estimate is averaged over the subsets and centred on the estimate from all samples. Its intervals estimate the same N-sample bootstrap intervals, at a cost independent of N.

Groups (``Columns.groups``: a store's groups column, the patient for ``nih:``, a study for
DICOM): a patient's follow-up images are not independent, and resampling them one by one makes
intervals too narrow. Where the samples have groups the bootstrap resamples whole groups (the
cluster bootstrap, Davison & Hinkley 1997 §3.8): a resample draws G of the G groups with
replacement, and every sample of a group counts as often as its group was drawn. Like the
image bootstrap of these intervals it is not stratified by class (class sizes cannot be held
when whole patients are drawn): a class's positives are whatever the drawn groups hold, and a resample that holds no positive (or no negative) of a class has no AUC for it and
is left out of that class's percentiles, as the image bootstrap does. Above :data:`EXACT_MAX`
samples the little bootstraps take subsets of whole groups, as many as hold about ``b``
samples and at least G^0.6 groups, each resampled to G groups by Poisson(G / b_groups) counts
per group (:func:`bootstrap_plan`, :class:`Resampling`). With one sample per group this is the
image bootstrap in distribution (not draw for draw: another stream of the same seed). The
intervals record their ``unit`` (``image`` or ``group``) and ``n_groups``.

Reproducible: the resamples come from numpy's seeded PCG64 stream and every weight is a whole
count; AUCs and counts are sums of whole (or half) numbers in float64, exact whatever order or
BLAS adds them in, so one seed gives the same intervals on any machine with the same numpy.
Point estimates use every sample, with or without groups.

Two scorers on the same images are compared by :func:`paired_auc_difference`: the same
weighted counts, resampled within each class, give both AUCs (a paired, stratified bootstrap of
the difference, over images: it takes no groups), and DeLong's test for correlated ROC curves
gives its p-value. Neither
scikit-learn nor SciPy provides DeLong's test; it is written here (:func:`delong_covariance`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import UsageError

EXACT_MAX = 5_000
"""Up to this many samples the bootstrap resamples all of them; above, bag of little bootstraps."""
BLB_SUBSETS = 10
"""Subsets of the bag of little bootstraps (its authors find 10–20 enough)."""

#: The decision each multi-class ``--prior`` leaves (the prediction is the most probable class of
#: the posterior the prior gives) and each multi-label score rule's, named once: the console,
#: the record (``threshold``) and the report's confusion matrix all say :func:`decision_rule`.
MULTICLASS_DECISIONS = {
    "none": "argmax over classes",
    "em": "argmax of the EM-adjusted posterior (class priors estimated on the queries)",
    "mixture": "argmax of the mixture posterior (two-Gaussian calibration on the queries)",
}
MULTILABEL_DECISIONS = {
    "contrast": "probability ≥ 0.5 (positive prompt beats negative)",
    "positive": "probability ≥ 0.5 (positive prompt's logit ≥ 0)",
}
#: Bootstrap resamples behind a reported 95 % interval, unless the caller says otherwise.
DEFAULT_BOOTSTRAP = 1000


def decision_rule(mode: str, prior: str = "none", multilabel_rule: str = "contrast") -> str:
    """How a sample's prediction is made, in words, for ``mode`` under ``prior`` (multi-class)
    or ``multilabel_rule`` (multi-label)."""
    if mode == "multiclass":
        return MULTICLASS_DECISIONS[prior]
    return MULTILABEL_DECISIONS[multilabel_rule]


def composition_rule(mode: str, composition: dict[str, Any] | None) -> str:
    """:func:`decision_rule` of a score file, from the composition its header records."""
    comp = composition or {}
    prior = (comp.get("prior") or {}).get("name", "none")
    return decision_rule(mode, prior if prior in MULTICLASS_DECISIONS else "none",
                         comp.get("multilabel_rule", "contrast"))


def auc(y: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC (Mann–Whitney, ties counted half: what scikit-learn's ``roc_auc_score`` gives);
    NaN where one class is absent. One sort, then counts: about 3× faster than
    ``roc_auc_score`` at a million samples, which matters with 14 classes."""
    y = np.asarray(y, dtype=bool)
    if y.all() or not y.any():
        return float("nan")
    return float(_SortedClass(y, np.asarray(score, dtype=np.float64)).point())


def f1(y: np.ndarray, pred: np.ndarray) -> float:
    y, pred = np.asarray(y, bool), np.asarray(pred, bool)
    tp = int((y & pred).sum())
    denom = 2 * tp + int((~y & pred).sum()) + int((y & ~pred).sum())
    return float(2 * tp / denom) if denom else float("nan")


def truth_matrix(labels: Sequence[str] | np.ndarray, matchers: Sequence[Callable[[str], bool]]
                 ) -> np.ndarray:
    """(n, C) bool: ``matchers[c](label)`` for every label, evaluated once per distinct label.

    A million rows hold a handful of distinct labels, so this costs C calls per distinct
    label plus one ``np.unique``, never a Python loop over samples × classes.
    """
    values = np.asarray(labels, dtype=object).reshape(-1)
    if len(values) == 0:
        return np.zeros((0, len(matchers)), dtype=bool)
    # Codes by a dict of the distinct labels: one hash per sample, where np.unique would sort
    # a unicode copy of all N labels (slower, and N × longest-label × 4 bytes).
    codes: dict[Any, int] = {}
    inverse = np.fromiter((codes.setdefault(v, len(codes)) for v in values.tolist()),
                          dtype=np.int64, count=len(values))
    table = np.array([[bool(m(str(u))) for m in matchers] for u in codes], dtype=bool)
    return table.reshape(len(codes), len(matchers))[inverse]


class LabelTable:
    """Labels as int32 codes, each distinct label matched against the classes once.

    For a loop over blocks: :meth:`codes` codes a block's labels (a dict lookup per label, or
    none for codes a store already holds, see :meth:`remap`); :attr:`table` is the truth of
    each code, (distinct labels, C) bool.
    """

    def __init__(self, matchers: Sequence[Callable[[str], bool]]) -> None:
        self._matchers = list(matchers)
        self._index: dict[str, int] = {}
        self._rows: list[list[bool]] = []
        self._table: np.ndarray | None = None

    def _code(self, label: str) -> int:
        code = self._index.get(label)
        if code is None:
            code = self._index[label] = len(self._rows)
            self._rows.append([bool(m(label)) for m in self._matchers])
            self._table = None
        return code

    def codes(self, labels: Sequence[str] | np.ndarray) -> np.ndarray:
        values = np.asarray(labels, dtype=object).reshape(-1)
        return np.fromiter((self._code(str(v)) for v in values.tolist()), dtype=np.int32, count=len(values))

    def remap(self, values: np.ndarray) -> np.ndarray:
        """Codes of a store's distinct values (``store.column_codes``): then ``remap[codes]``."""
        return self.codes(values)

    @property
    def table(self) -> np.ndarray:
        if self._table is None:
            self._table = np.array(self._rows, dtype=bool).reshape(len(self._rows), len(self._matchers))
        return self._table

    def usable(self, mode: str) -> np.ndarray:
        """Per code: the label is known and, multi-class, matches exactly one class."""
        known = np.array([label != "" for label in self._index], dtype=bool)
        return known & (self.table.sum(axis=1) == 1) if mode == "multiclass" else known


def _predictions(truth: np.ndarray, prob: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """(pred (n, C) bool, per-sample share correct (n,)): accuracy is its (weighted) mean."""
    if mode == "multiclass":
        pred_idx = prob.argmax(axis=1)
        pred = np.zeros_like(truth)
        pred[np.arange(len(pred)), pred_idx] = True
        correct = truth[np.arange(len(truth)), pred_idx].astype(np.float64)
    else:
        pred = prob >= 0.5
        correct = (pred == truth).mean(axis=1, dtype=np.float64)
    return pred, correct


def nanmean(values: np.ndarray, axis: int | None = None) -> Any:
    """Mean over the finite entries; NaN (no warning) where there are none."""
    v = np.asarray(values, dtype=np.float64)
    ok = ~np.isnan(v)
    count = ok.sum(axis=axis)
    total = np.where(ok, v, 0.0).sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return float(out) if np.ndim(out) == 0 else out


def _point(truth: np.ndarray, prob: np.ndarray, mode: str, ranking: np.ndarray | None = None
           ) -> dict[str, Any]:
    """truth: (n, C) bool; prob: (n, C); ``ranking``: a monotone transform of ``prob`` that
    does not saturate (log-odds), used for AUC. Multi-class rows have one True."""
    n_cls = truth.shape[1]
    rank = prob if ranking is None else ranking
    aucs = [auc(truth[:, c], rank[:, c]) for c in range(n_cls)]
    pred, correct = _predictions(truth, prob, mode)
    f1s = [f1(truth[:, c], pred[:, c]) for c in range(n_cls)]
    return {
        "auc": aucs,
        "auc_macro": nanmean(aucs),
        "accuracy": float(correct.mean()),
        "f1": f1s,
        "f1_macro": nanmean(f1s),
    }


class _SortedClass:
    """One class's scores sorted once: AUCs under any sample weights are then weighted counts."""

    def __init__(self, y: np.ndarray, score: np.ndarray) -> None:
        self.order = np.argsort(score)  # ties are grouped below, so no stable sort (4× slower)
        s = score[self.order]
        self.pos = y[self.order]
        # Tied scores form contiguous runs in sorted order; a run's pos–neg pairs count half.
        new = np.empty(len(s), dtype=bool)
        new[:1] = True
        new[1:] = s[1:] != s[:-1]
        self.starts = None if new.all() else np.flatnonzero(new)
        if self.starts is not None:
            # Samples in runs of two or more, with their run's first and last place: only
            # these need the tie correction below (float scores tie rarely, so few).
            length = np.diff(np.append(self.starts, len(s)))
            multi = length > 1
            runs = length[multi]
            first = np.repeat(self.starts[multi], runs)
            offset = np.arange(len(first)) - np.repeat(np.cumsum(runs) - runs, runs)  # place in its run
            self.tied, self.tied_first = first + offset, first
            self.tied_last = np.repeat((self.starts + length - 1)[multi], runs)

    def _auc(self, p: np.ndarray, q: np.ndarray) -> np.ndarray:
        """Rows of positive / negative weights in sorted order -> AUC per row."""
        cum = np.cumsum(q, axis=1)
        below = cum - 0.5 * q  # strictly lower negatives plus half of the tied ones (itself)
        if self.starts is not None:
            # A tied run's samples all lie above the negatives before the run plus half of the
            # run's own: (cum before the run + cum at its end) / 2. Only the tied places change.
            before = np.where(self.tied_first > 0, cum[:, np.maximum(self.tied_first - 1, 0)], 0.0)
            below[:, self.tied] = 0.5 * (before + cum[:, self.tied_last])
        # float64 sums: the products reach ~1e8 each and there are b of them.
        num = (p * below).sum(axis=1, dtype=np.float64)
        den = p.sum(axis=1, dtype=np.float64) * q.sum(axis=1, dtype=np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)

    def point(self) -> float:
        if self.starts is None:
            # No ties: the positive at sorted place k, j-th positive so far, lies above k - j
            # negatives; summed, Σk - P(P-1)/2. No float pass over all samples.
            at = np.flatnonzero(self.pos)
            n_pos, n_neg = len(at), len(self.pos) - len(at)
            if n_pos == 0 or n_neg == 0:
                return float("nan")
            return float((at.sum(dtype=np.float64) - n_pos * (n_pos - 1) / 2) / (n_pos * n_neg))
        pos = self.pos.astype(np.float64)[None, :]
        return float(self._auc(pos, 1.0 - pos)[0])

    def aucs(self, weights: np.ndarray) -> np.ndarray:
        """AUC under each row of ``weights`` (r, b), sample counts of one resample each."""
        w = weights[:, self.order]
        p = w * self.pos
        return self._auc(p, w - p)


def resampled_auc(y: np.ndarray, score: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """A function from sample weights (r, n), one resample's counts per row, to the AUC under
    each row: the scores are sorted once, so resamples shared by several classes (one draw of
    counts, every class's AUC under it) cost no sort each. NaN where a class is absent."""
    y = np.asarray(y, dtype=bool)
    if y.all() or not y.any():
        return lambda weights: np.full(len(weights), np.nan)
    return _SortedClass(y, np.asarray(score, dtype=np.float64)).aucs


def _indicators(truth: np.ndarray, pred: np.ndarray, correct: np.ndarray) -> np.ndarray:
    """(b, 3C + 1): tp, fp, fn of every class, and the share correct, per sample."""
    return np.concatenate([truth & pred, ~truth & pred, truth & ~pred, correct[:, None]],
                          axis=1).astype(np.float64)


def _resampled(ind: np.ndarray, weights: np.ndarray, sorted_classes: list[_SortedClass]
               ) -> dict[str, np.ndarray]:
    """Every metric under each row of ``weights`` (r, b): arrays of r values (AUC: (r, C))."""
    w = weights.astype(np.float64)
    total = w.sum(axis=1)
    # Counts of every class at once. einsum's own loop, not BLAS: these products are small,
    # and threaded BLAS spins badly on a busy machine (measured 8 s for this at 100k on 2 cores).
    counts = np.einsum("rb,bk->rk", w, ind)
    n_cls = len(sorted_classes)
    tp, fp, fn = counts[:, :n_cls], counts[:, n_cls:2 * n_cls], counts[:, 2 * n_cls:3 * n_cls]
    denom = 2 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        f1s = np.where(denom > 0, 2 * tp / np.where(denom > 0, denom, 1.0), np.nan)
    aucs = np.stack([sc.aucs(weights) for sc in sorted_classes], axis=1)
    return {
        "auc": aucs,
        "auc_macro": nanmean(aucs, axis=1),
        "accuracy": counts[:, 3 * n_cls] / total,
        "f1_macro": nanmean(f1s, axis=1),
    }


def _percentiles(values: np.ndarray, level: float) -> list[float] | None:
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    if not len(v):
        return None
    lo, hi = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    return [float(np.percentile(v, lo)), float(np.percentile(v, hi))]


def bootstrap_plan(n: int, n_boot: int, exact_max: int = EXACT_MAX, n_groups: int | None = None
                   ) -> tuple[int, int, int]:
    """(subsets, units per subset, resamples per subset) for ``n`` samples; the units are the
    samples, or with ``n_groups`` the groups they fall in (see the module doc). Whether the
    little bootstraps are needed is decided by ``n``, what a resample costs."""
    if n <= exact_max:
        return 1, n if n_groups is None else n_groups, n_boot
    s = min(BLB_SUBSETS, n_boot)
    b = min(n, max(exact_max, math.ceil(n ** 0.6)))
    if n_groups is None:
        return s, b, math.ceil(n_boot / s)
    # Whole groups holding about b samples (the same cost), and at least G^0.6 groups.
    b_groups = min(n_groups, max(math.ceil(n_groups ** 0.6), math.ceil(b * n_groups / n)))
    return (1, n_groups, n_boot) if b_groups >= n_groups else (s, b_groups, math.ceil(n_boot / s))


def group_codes(groups: Sequence[Any] | np.ndarray | None) -> np.ndarray | None:
    """Each sample's group as an int64 code in 0..G-1 (None: no groups). A sample whose group
    is empty (no patient id) is a group of its own, never lumped with the others such."""
    if groups is None:
        return None
    values = np.asarray(groups).reshape(-1)
    if values.dtype.kind == "O":
        values = values.astype(str)
    keys, codes = np.unique(values, return_inverse=True)
    if values.dtype.kind == "U" and len(keys) and keys[0] == "":
        lone = codes == 0
        codes = codes + int(lone.sum()) - 1  # room for one code per ungrouped sample
        codes[lone] = np.arange(int(lone.sum()))
    return codes.reshape(-1).astype(np.int64)


def _draw_counts(rng: np.random.Generator, total: int, b: int, size: int) -> np.ndarray:
    """(size, b) counts of ``total`` draws with replacement among ``b`` units each: the
    multinomial, as a bincount of uniform draws (far cheaper than ``rng.multinomial``)."""
    picks = rng.integers(0, b, size=(size, total)) + (np.arange(size) * b)[:, None]
    return np.bincount(picks.ravel(), minlength=size * b).reshape(size, b)


@dataclass
class Resampling:
    """The bootstrap's design: each subset's samples and each resample's weights over them.

    Samples one by one (``local`` None): as the module doc says. By group (``local``: per
    subset, each row's group among the subset's groups): a resample draws whole groups, every
    sample of a group weighted by its group's count, so a patient's images go in and out
    together (the cluster bootstrap). ``exact_draw``: how the ordinary bootstrap of samples
    draws its counts (``multinomial``, `stitch classify`'s; ``bincount``, `stitch benchmark`'s:
    the same distribution from another stream, each kept so that intervals stay as they were).
    """

    rows: list[np.ndarray]
    per_sub: int
    n: int  # samples
    local: list[np.ndarray] | None = None
    n_groups: int | None = None
    exact_draw: str = "multinomial"

    @property
    def unit(self) -> str:
        return "image" if self.local is None else "group"

    @property
    def n_boot(self) -> int:
        return len(self.rows) * self.per_sub

    def weights(self, rng: np.random.Generator, k: int, size: int) -> np.ndarray:
        """(size, len(rows[k])) float32 weights of ``size`` resamples of subset ``k``. One
        subset of all: the ordinary bootstrap (n draws, or G groups, with replacement). Little
        bootstraps: Poisson(N / b) counts per unit, the Poisson bootstrap's (Hanley & MacGibbon
        2006), 3× cheaper to draw; the totals then vary by about √N, which ratios such as AUC,
        accuracy and F1 do not see. Counts are exact in float32 (< 2^24), half float64's traffic."""
        little = len(self.rows) > 1
        if self.local is None:
            b = len(self.rows[k])
            if little:
                return rng.poisson(self.n / b, size=(size, b)).astype(np.float32)
            if self.exact_draw == "multinomial":
                return rng.multinomial(self.n, np.full(b, 1.0 / b), size=size).astype(np.float32)
            return _draw_counts(rng, self.n, b, size).astype(np.float32)
        local, g = self.local[k], int(self.local[k].max()) + 1
        total = int(self.n_groups or g)
        counts = rng.poisson(total / g, size=(size, g)) if little else _draw_counts(rng, total, g, size)
        return counts.astype(np.float32)[:, local]

    def describe(self, samples: str = "samples", over: bool = False) -> str:
        """The method in words: how many subsets of what, resampled to what."""
        s = len(self.rows)
        if self.local is None:
            name = "percentile bootstrap" if s == 1 else "bag of little bootstraps"
            name += f" over {samples}" if over else ""
            b = len(self.rows[0])
            return name if s == 1 else f"{name}: {s} subsets of {b:,} {samples}, each resampled to about {self.n:,}"
        if s == 1:
            return (f"percentile bootstrap over groups: {self.n_groups:,} groups, each drawn whole "
                    f"(all its {samples}) with replacement")
        g = int(self.local[0].max()) + 1
        mean = round(float(np.mean([len(r) for r in self.rows])))
        return (f"bag of little bootstraps over groups: {s} subsets of {g:,} of the {self.n_groups:,} groups "
                f"(about {mean:,} {samples} each), each resampled to {self.n_groups:,} groups")

    def record(self) -> dict[str, Any]:
        """What the record says of the design: the unit resampled and, by group, how many."""
        return {"unit": self.unit, "n_groups": self.n_groups}


def resampling(rng: np.random.Generator, n: int, n_boot: int, *, groups: np.ndarray | None = None,
               exact_max: int = EXACT_MAX, exact_draw: str = "multinomial") -> Resampling:
    """The subsets of :func:`bootstrap_plan`, drawn from ``rng`` before any class is read (so
    one pass over the classes gathers them all): all samples for the ordinary bootstrap, else
    random subsets of samples, or with ``groups`` (codes from :func:`group_codes`) of whole groups."""
    if groups is None:
        n_sub, b, per_sub = bootstrap_plan(n, n_boot, exact_max)
        return Resampling(_subset_rows(rng, n, n_sub, b), per_sub, n, exact_draw=exact_draw)
    codes = np.asarray(groups, dtype=np.int64).reshape(-1)
    if len(codes) != n:
        raise UsageError(f"groups has {len(codes)} entries for {n} samples")
    n_groups = int(codes.max()) + 1 if n else 0
    n_sub, b, per_sub = bootstrap_plan(n, n_boot, exact_max, n_groups)
    if n_sub == 1:
        return Resampling([np.arange(n)], per_sub, n, [codes], n_groups)
    rows, local = [], []
    for _ in range(n_sub):
        chosen = np.sort(rng.choice(n_groups, size=b, replace=False))
        at = np.flatnonzero(np.isin(codes, chosen))
        rows.append(at)
        local.append(np.searchsorted(chosen, codes[at]))
    return Resampling(rows, per_sub, n, local, n_groups)


class Columns:
    """What the metrics read, one class at a time: ``n`` samples × ``n_classes``.

    The classify loop gives one backed by per-class files (:mod:`.score_writer`), so the
    metrics hold O(N) memory for one class, never (N, C) arrays; :func:`classification_metrics` wraps
    in-memory arrays. Both give the same figures by the same code.
    """

    n: int
    n_classes: int
    #: (n,) int group of each sample (:func:`group_codes`: a patient, a study), or None: the
    #: bootstrap then resamples whole groups, else samples one by one.
    groups: np.ndarray | None = None

    def truth(self, c: int) -> np.ndarray:
        """(n,) bool: class ``c`` is present."""
        raise NotImplementedError

    def rank(self, c: int) -> np.ndarray:
        """(n,) scores AUC ranks class ``c`` by (log-odds, logit differences)."""
        raise NotImplementedError

    def pred(self, c: int) -> np.ndarray:
        """(n,) bool: class ``c`` is predicted (see the module's thresholds)."""
        raise NotImplementedError

    def correct(self) -> np.ndarray:
        """(n,) float64: each sample's share correct (accuracy is its mean)."""
        raise NotImplementedError


class ArrayColumns(Columns):
    """(n, C) arrays in memory as :class:`Columns`."""

    def __init__(self, truth: np.ndarray, prob: np.ndarray, mode: str,
                 ranking: np.ndarray | None = None, groups: Sequence[Any] | np.ndarray | None = None) -> None:
        self._truth, self._rank = truth, prob if ranking is None else ranking
        self.n, self.n_classes = truth.shape
        self.groups = group_codes(groups)
        self._pred, self._correct = _predictions(truth, prob, mode)

    def truth(self, c: int) -> np.ndarray:
        return self._truth[:, c]

    def rank(self, c: int) -> np.ndarray:
        return self._rank[:, c]

    def pred(self, c: int) -> np.ndarray:
        return self._pred[:, c]

    def correct(self) -> np.ndarray:
        return self._correct


def _subset_rows(rng: np.random.Generator, n: int, n_sub: int, b: int) -> list[np.ndarray]:
    """The samples of each little bootstrap (all of them for the ordinary bootstrap), drawn
    before any class is read, so that one pass over the classes gathers them all."""
    return [np.arange(n) if b == n else np.sort(rng.choice(n, size=b, replace=False))
            for _ in range(n_sub)]


def _point_and_subsets(cols: Columns, subsets: list[np.ndarray]
                       ) -> tuple[dict[str, Any], list[int], list[tuple[np.ndarray, ...]]]:
    """One pass over the classes: point estimates from all samples, positives per class, and
    each subset's (truth, pred, correct, rank) rows for the bootstrap."""
    n_cls = cols.n_classes
    aucs, f1s, positives = [], [], []
    parts: list[list[np.ndarray]] = [[np.empty((len(r), n_cls), dtype=bool),
                                      np.empty((len(r), n_cls), dtype=bool), None, None]  # type: ignore[list-item]
                                     for r in subsets]
    for c in range(n_cls):
        t, r, p = np.asarray(cols.truth(c), dtype=bool), np.asarray(cols.rank(c)), np.asarray(cols.pred(c), dtype=bool)
        n_pos = int(t.sum())
        positives.append(n_pos)
        # One sort per class; the scores' own precision (float32 from the score loop): the
        # order, and so the AUC, is that of the float64 values.
        aucs.append(float("nan") if n_pos in (0, len(t)) else float(_SortedClass(t, r).point()))
        f1s.append(f1(t, p))
        for part, rows in zip(parts, subsets, strict=True):
            part[0][:, c], part[1][:, c] = t[rows], p[rows]
            if part[3] is None:
                part[3] = np.empty((len(rows), n_cls), dtype=r.dtype)
            part[3][:, c] = r[rows]
    correct = np.asarray(cols.correct(), dtype=np.float64)
    for part, rows in zip(parts, subsets, strict=True):
        part[2] = correct[rows]
    point = {"auc": aucs, "auc_macro": nanmean(aucs), "accuracy": float(correct.mean()),
             "f1": f1s, "f1_macro": nanmean(f1s)}
    return point, positives, [tuple(p) for p in parts]


def _intervals(parts: list[tuple[np.ndarray, ...]], design: Resampling, rng: np.random.Generator,
               level: float, block: int, centre: dict[str, Any]) -> dict[str, Any]:
    """Percentile intervals from each subset's (truth, pred, correct, rank) rows, ``per_sub``
    resamples each (the rng continues from drawing the subsets)."""
    n_cls = parts[0][0].shape[1]
    per_sub = design.per_sub
    keys = ("auc_macro", "accuracy", "f1_macro")
    bounds: dict[str, list[list[float] | None]] = {k: [] for k in keys}
    class_bounds: list[list[list[float] | None]] = [[] for _ in range(n_cls)]
    for i, (t, pred, correct, r) in enumerate(parts):
        b = len(t)
        ind = _indicators(t, pred, correct)
        sorted_classes = [_SortedClass(t[:, c], r[:, c]) for c in range(n_cls)]
        draws: dict[str, list[np.ndarray]] = {k: [] for k in (*keys, "auc")}
        for a in range(0, per_sub, block):  # blocks of resamples bound the (r, b) work arrays
            weights = design.weights(rng, i, min(block, per_sub - a))  # (Resampling.weights)
            for k, v in _resampled(ind, weights, sorted_classes).items():
                draws[k].append(v)
        # Each subset's draws scatter around that subset's own estimate, which is itself
        # b-sample noisy: keep only their spread (draw − subset estimate), centred below on the
        # estimate from all samples. With one subset of all n this is the percentile interval.
        own = _resampled(ind, np.ones((1, b), dtype=np.float32), sorted_classes)
        for k in keys:
            bounds[k].append(_percentiles(np.concatenate(draws[k]) - own[k][0], level))
        aucs = np.concatenate(draws["auc"]) - own["auc"][0]
        for c in range(n_cls):
            class_bounds[c].append(_percentiles(aucs[:, c], level))

    def average(found: list[list[float] | None], at: float) -> list[float] | None:
        ok = [f for f in found if f is not None]
        if not ok or np.isnan(at):
            return None
        return [float(at + np.mean([f[0] for f in ok])), float(at + np.mean([f[1] for f in ok]))]

    return {
        "level": level,
        "n_boot": design.n_boot,
        "method": design.describe(),
        **design.record(),
        **{k: average(bounds[k], centre[k]) for k in keys},
        "auc": [average(class_bounds[c], centre["auc"][c]) for c in range(n_cls)],
    }


def bootstrap_intervals(
    cols: Columns, *, n_boot: int = 1000, seed: int = 0, level: float = 0.95, block: int = 16,
    point: dict[str, Any] | None = None, exact_max: int = EXACT_MAX,
) -> dict[str, Any]:
    """Percentile intervals of AUC (per class, macro), accuracy and macro F1 (see module doc).

    ``cols``: what is measured, as :class:`Columns` (the truth, the predictions the mode makes
    and the ranking AUC uses belong together; :class:`ArrayColumns` wraps (n, C) arrays).
    ``point``: the estimates from all samples (``_point``), when already computed.
    """
    rng = np.random.default_rng(seed)
    design = resampling(rng, cols.n, n_boot, groups=cols.groups, exact_max=exact_max)
    own_point, _, parts = _point_and_subsets(cols, design.rows)
    return _intervals(parts, design, rng, level, block, own_point if point is None else point)


def evaluate_columns(cols: Columns, classes: list[str], *, mode: str, n_boot: int = 1000,
                     seed: int = 0, level: float = 0.95, rule: str | None = None) -> dict[str, Any]:
    """:func:`classification_metrics` on :class:`Columns`: memory for one class at a time.

    ``rule``: how the predictions were made (:func:`decision_rule`; default: with no prior)."""
    n = cols.n
    boot = n_boot > 0 and n >= 2
    rng = np.random.default_rng(seed)
    design = resampling(rng, n, n_boot, groups=cols.groups) if boot else None
    point, positives, parts = _point_and_subsets(cols, design.rows if design else [])
    out: dict[str, Any] = {
        "n": int(n),
        "mode": mode,
        "threshold": rule or decision_rule(mode),
        "positives": dict(zip(classes, positives, strict=True)),
        "auc": dict(zip(classes, point["auc"], strict=True)),
        "auc_macro": point["auc_macro"],
        "accuracy": point["accuracy"],
        "f1": dict(zip(classes, point["f1"], strict=True)),
        "f1_macro": point["f1_macro"],
    }
    if not boot:
        return out
    ci = _intervals(parts, design, rng, level, 16, point)
    ci["auc"] = dict(zip(classes, ci["auc"], strict=True))
    out["ci"] = ci
    return out


def classification_metrics(
    truth: np.ndarray,
    prob: np.ndarray,
    classes: list[str],
    *,
    mode: str,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    ranking: np.ndarray | None = None,
) -> dict[str, Any]:
    """AUC per class and macro, accuracy, F1 per class and macro, each with a bootstrap CI.

    AUC ranks by ``ranking`` where given (log-odds: same order as ``prob`` without
    float saturation), else by ``prob``.
    """
    truth = np.asarray(truth, dtype=bool)
    # No float64 copies of (N, C) arrays: prob only decides predictions (argmax, ≥ 0.5) and
    # the ranking only orders samples, both exact in the precision they come in.
    prob = np.asarray(prob)
    if prob.dtype.kind != "f":
        prob = prob.astype(np.float64)
    ranking = None if ranking is None else np.asarray(ranking)
    return evaluate_columns(ArrayColumns(truth, prob, mode, ranking), classes, mode=mode,
                            n_boot=n_boot, seed=seed, level=level)


# -- comparing two scorers on the same images ----------------------------------------------------
def delong_covariance(y: np.ndarray, scores: Sequence[np.ndarray] | np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(AUC of each scorer (k,), DeLong's covariance of those AUCs (k, k)) on the same samples.

    DeLong, DeLong & Clarke-Pearson (Biometrics 1988): the AUC is a two-sample U statistic, the
    mean over the m positives of their placements V10 (the share of negatives scored below,
    ties half), equally the mean over the n negatives of V01 (the share of positives above);
    its covariance across scorers is S10 / m + S01 / n, S10 and S01 the sample covariances
    (ddof 1) of the placements. The placements come from midranks (Sun & Xu, IEEE SPL 2014):
    a positive's midrank among all samples minus its midrank among the positives counts the
    negatives below it, so no m × n comparison is made (O(k N log N)).
    """
    from scipy.stats import rankdata

    y = np.asarray(y, dtype=bool).reshape(-1)
    s = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    if s.shape[1] != len(y):
        raise UsageError(f"scores have {s.shape[1]} samples, the truth {len(y)}")
    if not np.isfinite(s).all():
        raise UsageError("scores hold NaN or Inf: an AUC needs every sample ranked")
    m, n = int(y.sum()), int((~y).sum())
    if m < 2 or n < 2:
        raise UsageError(f"{m} positives and {n} negatives: DeLong's variance needs at least two of each")
    pos, neg = s[:, y], s[:, ~y]
    all_ranks = rankdata(np.concatenate([pos, neg], axis=1), method="average", axis=1)
    v10 = (all_ranks[:, :m] - rankdata(pos, method="average", axis=1)) / n
    v01 = 1.0 - (all_ranks[:, m:] - rankdata(neg, method="average", axis=1)) / m
    aucs = v10.mean(axis=1)
    cov = np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n
    return aucs, cov


def _delong_test(difference: float, cov: np.ndarray) -> dict[str, float]:
    """Two-sided z test of AUC_a − AUC_b = 0 under DeLong's covariance of the two AUCs."""
    from scipy.stats import norm

    var = float(cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1])
    se = math.sqrt(max(var, 0.0))
    if se == 0.0:
        # No spread in the paired placements (e.g. the same scores twice): the difference is
        # exactly what every resample would give, so it is certain, zero or not.
        z = 0.0 if difference == 0 else math.copysign(math.inf, difference)
    else:
        z = difference / se
    return {"se": se, "z": z, "p_value": float(2.0 * norm.sf(abs(z)))}


def _stratified_subsets(y: np.ndarray, rng: np.random.Generator, n_sub: int, size: int) -> list[np.ndarray]:
    """The rows of each little bootstrap, positives first: all of them for the ordinary
    bootstrap, else ``size`` rows keeping the class shares (at least two of each class)."""
    pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
    if n_sub == 1:
        return [np.concatenate([pos, neg])]
    b_pos = min(len(pos), max(2, round(size * len(pos) / len(y))))
    b_neg = min(len(neg), max(2, size - b_pos))
    return [np.concatenate([np.sort(rng.choice(pos, b_pos, replace=False)),
                            np.sort(rng.choice(neg, b_neg, replace=False))]) for _ in range(n_sub)]


def _paired_difference_interval(y: np.ndarray, score_a: np.ndarray, score_b: np.ndarray, difference: float,
                                n_boot: int, seed: int, level: float, block: int = 16) -> dict[str, Any]:
    """Percentile interval of AUC_a − AUC_b over resamples shared by both scorers (paired),
    drawn within each class (stratified: every resample holds all positives' and all negatives'
    counts, so neither AUC is ever undefined). Large N: the bag of little bootstraps, as
    :func:`bootstrap_intervals` (:func:`bootstrap_plan`)."""
    rng = np.random.default_rng(seed)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    n_sub, subset_size, per_sub = bootstrap_plan(len(y), n_boot)
    spreads = []
    for rows in _stratified_subsets(y, rng, n_sub, subset_size):
        ys = y[rows]
        k_pos = int(ys.sum())
        # Each scorer's scores sorted once; every resample is a row of counts over ``rows``,
        # the same row for both scorers: that is what makes the comparison paired.
        auc_a, auc_b = resampled_auc(ys, score_a[rows]), resampled_auc(ys, score_b[rows])
        draws = []
        for start in range(0, per_sub, block):
            size = min(block, per_sub - start)
            counts = np.concatenate(
                [rng.multinomial(n_pos, np.full(k_pos, 1.0 / k_pos), size=size),
                 rng.multinomial(n_neg, np.full(len(rows) - k_pos, 1.0 / (len(rows) - k_pos)), size=size)],
                axis=1)
            weights = counts.astype(np.float32)  # exact below 2^24
            draws.append(auc_a(weights) - auc_b(weights))
        ones = np.ones((1, len(rows)), dtype=np.float32)
        own = float(auc_a(ones)[0] - auc_b(ones)[0])
        # As in _intervals: each subset's spread around its own difference, centred on the
        # difference from all samples (for one subset of all, the plain percentile interval).
        spreads.append(_percentiles(np.concatenate(draws) - own, level))
    method = ("paired percentile bootstrap, stratified by class" if n_sub == 1 else
              f"paired bag of little bootstraps, stratified by class: {n_sub} subsets of about "
              f"{subset_size:,} samples")
    return {"level": level, "n_boot": n_sub * per_sub, "method": method,
            "difference": [difference + float(np.mean([s[0] for s in spreads])),
                           difference + float(np.mean([s[1] for s in spreads]))]}


def paired_auc_difference(y: np.ndarray, score_a: np.ndarray, score_b: np.ndarray, *,
                          n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict[str, Any]:
    """Two scorers' AUC on the same samples compared: is A better than B, or is it noise?

    ``y``: one binary truth per sample; ``score_a``, ``score_b``: each scorer's ranking score
    for the same samples in the same order. Returns ``auc_a``, ``auc_b``, their ``difference``
    (a − b), ``ci["difference"]``: its ``level`` bootstrap interval (paired: both AUCs under the
    same resampled rows; stratified: each resample keeps the class sizes), and ``delong``: the
    two-sided p-value of DeLong's test for correlated ROC curves, with its z and standard error
    (:func:`delong_covariance`). Two intervals of separate bootstraps overlap far more often
    than a paired comparison finds no difference, which is why this exists.

    The result does not depend on the order of the rows: they are put in one canonical order
    before resampling, so a score file's row order and a store's give the same interval.
    """
    y = np.asarray(y, dtype=bool).reshape(-1)
    a = np.asarray(score_a, dtype=np.float64).reshape(-1)
    b = np.asarray(score_b, dtype=np.float64).reshape(-1)
    if not len(y) == len(a) == len(b):
        raise UsageError(f"truth and scores differ in length: {len(y)}, {len(a)}, {len(b)}")
    if not 0.0 < level < 1.0:
        raise UsageError(f"level must be in (0, 1), got {level}")
    aucs, cov = delong_covariance(y, np.stack([a, b]))  # also checks classes and finite scores
    # Rows that compare equal in (truth, a, b) are interchangeable, so this order is canonical.
    order = np.lexsort((b, a, y))
    y, a, b = y[order], a[order], b[order]
    auc_a, auc_b = auc(y, a), auc(y, b)
    difference = auc_a - auc_b
    out: dict[str, Any] = {"n": int(len(y)), "positives": int(y.sum()), "auc_a": auc_a, "auc_b": auc_b,
                           "difference": difference,
                           "delong": {"test": "DeLong et al. 1988, paired, two-sided",
                                      **_delong_test(float(aucs[0] - aucs[1]), cov)}}
    if n_boot > 0:
        out["ci"] = _paired_difference_interval(y, a, b, difference, n_boot, seed, level)
    return out

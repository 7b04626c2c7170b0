"""Map classes with scikit-learn's contract over the solvers of :mod:`.functional`.

``__init__`` only stores parameters; ``fit`` (arrays) or ``fit_stats`` (sufficient statistics,
as the streaming reader produces them) validates them and sets the learned attributes, whose
names end in ``_``. Preprocessing statistics and the solution are kept separately (``W_`` acts
on preprocessed coordinates) so that a file says exactly what was fitted.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.exceptions import NotFittedError as SklearnNotFittedError
from sklearn.utils.validation import validate_data

from ..errors import UsageError
from . import functional as F
from .anchors import fold_of
from .functional import MapValueError

MAP_KIND = "map"


class NotFittedError(UsageError, SklearnNotFittedError):
    """A map used before ``fit``: scikit-learn's NotFittedError and a usage error for the CLI."""


def _one_line(exc: ValueError) -> str:
    """scikit-learn's validation message as the one line the CLI prints (no array dump)."""
    text = " ".join(str(exc).split())
    if " array=" in text:  # "Expected 2D array, got 1D array instead: array=[...]"
        text = text.split(" array=")[0].rstrip(":") + ": Reshape your data to rows × features " \
            "(array.reshape(1, -1) for one row)"
    elif text.startswith("Input") and " contains " in text:
        text = text.split(".")[0] + ": drop or re-embed those rows"
    return text


def _bool(v: Any) -> bool:
    return isinstance(v, bool | np.bool_)


class BaseMap(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Common parameters: ``center``, ``standardize`` (divide by the anchors' std), ``l2``
    (normalise rows before everything), ``restore`` (undo the target's preprocessing, so
    outputs live in the target space).

    A multi-output transformer in scikit-learn's terms: ``fit(X, Y)`` needs the target-side
    rows (a 1-D ``Y`` is one column), ``transform(X)`` returns float32 rows of ``Y``'s width.
    Bad input raises :class:`MapValueError` (a ``ValueError``), use before fit
    :class:`NotFittedError` (scikit-learn's); both carry the CLI's one-line message.
    """

    method: ClassVar[str] = ""
    _parameter_constraints: ClassVar[dict[str, Any]] = {
        "center": _bool,
        "standardize": _bool,
        "l2": _bool,
        "restore": _bool,
    }

    def __init__(
        self, *, center: bool = True, standardize: bool = True, l2: bool = False, restore: bool = True
    ) -> None:
        self.center = center
        self.standardize = standardize
        self.l2 = l2
        self.restore = restore

    # -- parameters ---------------------------------------------------------------------------
    def _validate_params(self) -> None:
        for name, check in self._parameter_constraints.items():
            value = getattr(self, name)
            if not check(value):
                raise MapValueError(f"{type(self).__name__}: invalid {name}={value!r}")

    def n_folds_for(self, n_samples: int, n_features: int) -> int:
        """How many folds of statistics ``fit_stats`` wants for this many anchors (more than
        one where alpha 'auto' is chosen by K-fold validation)."""
        return 1

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        # transform always returns float32 (maps apply in single precision).
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "W_")

    @property
    def _n_features_out(self) -> int:
        return self.n_features_out_

    # -- fitting ------------------------------------------------------------------------------
    def fit(
        self, X: np.ndarray, Y: np.ndarray, *, ids: Sequence[str] | None = None, exact: bool = True
    ) -> BaseMap:
        """Fit on paired rows. ``ids`` (optional) makes the inner CV folds independent of order."""
        self._validate_params()
        try:
            X, Y = validate_data(
                self, X, Y, multi_output=True, y_numeric=True, dtype=[np.float64, np.float32],
                ensure_min_samples=2,
            )
        except ValueError as exc:
            raise MapValueError(_one_line(exc)) from exc
        if Y.ndim == 1:
            Y = Y[:, None]  # one target column
        if self.l2:
            X, Y = F.l2_normalize(X), F.l2_normalize(Y)
        k = self.n_folds_for(*X.shape)
        if k == 1:
            folds = [F.SuffStats.from_arrays(X, Y, exact=exact)]
        else:
            which = (
                fold_of(ids, k, getattr(self, "random_state", 0))
                if ids is not None
                else np.random.default_rng(getattr(self, "random_state", 0)).integers(0, k, len(X))
            )
            folds = [F.SuffStats.from_arrays(X[which == j], Y[which == j], exact=exact) for j in range(k)]
        return self.fit_stats(folds)

    def fit_stats(self, stats: F.SuffStats | Sequence[F.SuffStats]) -> BaseMap:
        """Fit from sufficient statistics (one object, or per-fold objects)."""
        self._validate_params()
        folds = [stats] if isinstance(stats, F.SuffStats) else list(stats)
        total = F.merge_all(folds)
        if total.n < 2:
            raise MapValueError(f"{total.n} sample(s) (anchors): a map needs at least 2")
        pre = F.preprocessing_from_stats(total, center=self.center, standardize=self.standardize)
        self.pre_ = pre
        self._solve(F.transform_stats(total, pre), [F.transform_stats(f, pre) for f in folds])
        self._fold()
        self.n_anchors_ = int(total.n)
        self.n_features_in_ = total.dx
        self.n_features_out_ = total.dy
        # A refit forgets what the last fit learned; fit_map fills these in from the stores.
        self.metrics_: dict[str, Any] = {}
        self.anchors_: dict[str, Any] = {}
        self.fitted_on_ = None  # the anchors' ids, hashed: fit_map records them (stitchkit.fitted_on)
        self.source_space_: dict[str, Any] = {"model_spec": None, "weights_sha256": None, "dim": total.dx}
        self.target_space_: dict[str, Any] = {"model_spec": None, "weights_sha256": None, "dim": total.dy}
        return self

    def _solve(self, stats: F.SuffStats, folds: list[F.SuffStats]) -> None:
        raise NotImplementedError

    def _fold(self) -> None:
        """Fold preprocessing, W, b and restore into one float32 matrix and bias (see F.fold_affine)."""
        A, c = F.fold_affine(self.W_, self.b_, self.pre_, restore=self.restore)
        self.matrix_ = np.ascontiguousarray(A, dtype=np.float32)
        self.offset_ = c.astype(np.float32)

    # -- using --------------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "W_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted: call fit first")

    def _check_width(self, X: Any, expected: int, side: str) -> np.ndarray:
        shape = getattr(X, "shape", None)
        if shape is not None and len(shape) == 2 and shape[1] != expected:
            # scikit-learn's wording first (its checks match it), then the CLI's hint.
            raise MapValueError(
                f"X has {shape[1]} features, but {type(self).__name__} is expecting {expected} "
                f"features as input: this map's {side} side has width {expected}; use "
                "embeddings from the model the map was fitted on"
            )
        try:
            if side == "source" and hasattr(self, "n_features_in_"):
                return validate_data(self, X, reset=False, dtype=[np.float32, np.float64])
            from sklearn.utils import check_array

            return check_array(X, dtype=[np.float32, np.float64])
        except ValueError as exc:
            raise MapValueError(_one_line(exc)) from exc

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Map source rows (n, n_features_in_) into the target space, as float32."""
        self._check_fitted()
        X = self._check_width(X, self.n_features_in_, "source")
        return F.apply_folded(X, self.matrix_, self.offset_, l2=self.l2)

    def inverse_transform(self, Y: np.ndarray) -> np.ndarray:
        raise MapValueError(
            f"a {self.method} map has no inverse: only orthogonal maps do (fit the reverse "
            "direction with `stitch fit TARGET SOURCE`)"
        )

    # -- files --------------------------------------------------------------------------------
    def _extra_tensors(self) -> dict[str, np.ndarray]:
        return {}

    def _extra_meta(self) -> dict[str, Any]:
        return {}

    def save(self, path: str | Path) -> Path:
        from ..artifacts import save_artifact

        self._check_fitted()
        tensors = {
            "W": self.W_,
            "b": self.b_,
            "x_mean": self.pre_.x_mean,
            "x_scale": self.pre_.x_scale,
            "y_mean": self.pre_.y_mean,
            "y_scale": self.pre_.y_scale,
            **self._extra_tensors(),
        }
        meta = {
            "method": self.method,
            "params": self.get_params(),
            "n_anchors": self.n_anchors_,
            "n_features_in": self.n_features_in_,
            "n_features_out": self.n_features_out_,
            "source": self.source_space_,
            "target": self.target_space_,
            "anchors": self.anchors_,
            "metrics": self.metrics_,
            "formula": "y = restore((normalize?(x) - x_mean) / x_scale @ W + b), "
            "restore(z) = z * y_scale + y_mean",
            **self._extra_meta(),
        }
        arrays = {k: np.asarray(v, np.float64) for k, v in tensors.items()}
        fitted = getattr(self, "fitted_on_", None)  # the anchors, hashed (fit_map records them)
        if fitted is not None and fitted.known:
            from ..fitted_on import META_KEY

            meta[META_KEY] = fitted.meta()
            arrays.update(fitted.tensors())  # uint64: an older reader ignores them
        return save_artifact(path, MAP_KIND, arrays, meta)

    @classmethod
    def load(cls, path: str | Path) -> BaseMap:
        return load_map(path)

    def _set_extra(self, tensors: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        pass


class OrthogonalMap(BaseMap):
    """Procrustes: ỹ ≈ s · x̃ Q with Q orthogonal (zero-padded when widths differ).

    ``scale=True`` also fits the isotropic factor s. Has an inverse.
    """

    method = "orthogonal"
    _parameter_constraints = {**BaseMap._parameter_constraints, "scale": _bool}

    def __init__(
        self,
        *,
        center: bool = True,
        standardize: bool = True,
        l2: bool = False,
        restore: bool = True,
        scale: bool = False,
    ) -> None:
        super().__init__(center=center, standardize=standardize, l2=l2, restore=restore)
        self.scale = scale

    def _solve(self, stats: F.SuffStats, folds: list[F.SuffStats]) -> None:
        # Centred anchors span at most n − 1 directions (see F.solve_orthogonal).
        max_rank = stats.n - 1 if self.center else stats.n
        self.W_, self.b_, self.scale_ = F.solve_orthogonal(stats, scale=self.scale, max_rank=max_rank)

    def inverse_transform(self, Y: np.ndarray) -> np.ndarray:
        """Target rows back to the source space (exact when both widths are equal)."""
        self._check_fitted()
        Y = self._check_width(Y, self.n_features_out_, "target")
        return F.invert_orthogonal(Y, self.W_, self.b_, self.scale_, self.pre_, restore=self.restore)

    def _extra_meta(self) -> dict[str, Any]:
        return {"scale_factor": self.scale_}

    def _set_extra(self, tensors: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        self.scale_ = float(meta.get("scale_factor", 1.0))


def _alpha_ok(v: Any) -> bool:
    return v in ALPHA_WORDS or (
        isinstance(v, numbers.Real) and not isinstance(v, bool) and np.isfinite(v) and v >= 0
    )


#: Folds that choose alpha 'auto' when the anchors are fewer than NEAR_DIMENSION times the
#: source dimensions (5: on 300–700 IU anchors, 3 folds, fitted on two thirds of them, asked
#: for up to twice the held-out optimum's penalty). At or below the dimension GCV's limit as alpha -> 0 is the interpolating
#: fit, and with repeated targets (several images of one patient sharing one note) GCV picks
#: it: on the covid-notes pairs (185 anchors, 43 distinct notes, 1,280 dimensions) it chose the
#: grid's floor, and the zero-shot cosine route fell to Kermany AUC 0.65 from 0.79 with alpha
#: chosen by folds. Just above the dimension GCV's mean-leverage approximation fails too:
#: on 420 IU reports (MiniLM, 384 dimensions → mpnet) it chose alpha 0 (held-out MSE ×48 the
#: optimum), where K-fold stays within 1 % of the held-out optimum (docs/maps.md).
UNDERDETERMINED_FOLDS = 5
NEAR_DIMENSION = 4


#: ``alpha="stable"``, the affine / linear default: a fixed penalty of this times the Gram
#: matrix's mean eigenvalue. Exact least squares (``alpha=0``) interpolates the anchors when
#: their count nears the dimension, and its held-out quality collapses there (Lite0 → Lite2,
#: 1,280 dimensions: held-out cosine 0.836 at 500 anchors, 0.388 at 1,280, 0.879 at 3,000).
#: With 0.1 the same counts give 0.867, 0.884 and 0.911, rising with every count, and at
#: 0.001 or 0.01 the dip stays (0.64, 0.79 at 1,280); docs/maps.md. It is not chosen on the
#: data (that is ``ridge``): a floor under the smallest eigenvalues, the same at every count.
ALPHA_STABLE = 0.1
ALPHA_WORDS = ("auto", "stable")


class AffineMap(BaseMap):
    """Least squares with a bias, stabilised: ``alpha="stable"`` (the default) adds a fixed
    ridge penalty of :data:`ALPHA_STABLE` times the Gram matrix's mean eigenvalue, so that the
    solution degrades gracefully where the anchors are about as many as the dimensions;
    ``alpha=0`` is exact least squares (the minimum-norm solution below the dimension), a number
    a penalty of that size.

    ``alpha="auto"`` picks alpha from ``ALPHA_GRID`` (relative to the Gram matrix's mean
    eigenvalue): by default by generalised cross-validation (GCV) from one eigendecomposition
    of the fit anchors' Gram matrix (:func:`.functional.ridge_gcv`: one pass over the anchors,
    cost independent of their count); ``cv=K`` chooses by K-fold validation instead, then
    refits on all of them.
    """

    method = "affine"
    bias: ClassVar[bool] = True
    _parameter_constraints = {
        **BaseMap._parameter_constraints,
        "alpha": _alpha_ok,
        "cv": lambda v: v is None or (
            isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 2),
        "random_state": lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool),
        "rescale": _bool,
    }

    def __init__(
        self,
        *,
        alpha: float | str = "stable",
        center: bool = True,
        standardize: bool = True,
        l2: bool = False,
        restore: bool = True,
        cv: int | None = None,
        random_state: int = 0,
        rescale: bool = False,
    ) -> None:
        super().__init__(center=center, standardize=standardize, l2=l2, restore=restore)
        self.alpha = alpha
        self.cv = cv
        self.random_state = random_state
        self.rescale = rescale

    def n_folds_for(self, n_samples: int, n_features: int) -> int:
        if self.alpha != "auto":
            return 1
        if self.cv is not None:
            return int(self.cv)
        return UNDERDETERMINED_FOLDS if n_samples <= NEAR_DIMENSION * n_features else 1

    def _solve(self, stats: F.SuffStats, folds: list[F.SuffStats]) -> None:
        self._solve_penalised(stats, folds)
        self.rescale_factor_ = 1.0
        if self.rescale:
            weights = np.square(self.pre_.y_scale) if self.restore else np.ones(stats.dy)
            self.rescale_factor_ = F.spread_factor(stats, self.W_, bias=self.bias, weights=weights)
            self.W_ = self.W_ * self.rescale_factor_
            self.b_ = stats.mean_y - stats.mean_x @ self.W_ if self.bias else self.b_

    def _solve_penalised(self, stats: F.SuffStats, folds: list[F.SuffStats]) -> None:
        if self.alpha == "auto" and len(folds) < 2 and self.cv is None:
            fit = F.ridge_gcv(stats, bias=self.bias)
            self.alpha_relative_ = fit.alpha_relative
            self.alpha_ = fit.alpha
            self.cv_errors_ = fit.gcv
            self.alpha_selection_ = "gcv"
            self.W_, self.b_ = fit.W, fit.b
            return
        self.alpha_selection_ = f"{len(folds)}-fold" if self.alpha == "auto" else None
        if self.alpha == "auto":
            if len(folds) < 2:
                raise MapValueError(
                    "alpha 'auto' needs per-fold statistics: fit with fit(X, Y) or pass a list of folds"
                )
            rel, curve = F.choose_alpha(folds, bias=self.bias)
            self.alpha_relative_ = rel
            self.cv_errors_ = curve
            self.alpha_ = rel * F.alpha_scale(stats, bias=self.bias)
        elif self.alpha == "stable":
            self.alpha_relative_ = ALPHA_STABLE
            self.alpha_ = ALPHA_STABLE * F.alpha_scale(stats, bias=self.bias)
            self.cv_errors_ = None
        else:
            self.alpha_ = float(self.alpha)
            self.alpha_relative_ = self.alpha_ / F.alpha_scale(stats, bias=self.bias)
            self.cv_errors_ = None
        self.W_, self.b_ = F.solve_lstsq(stats, bias=self.bias, alpha=self.alpha_)

    def _extra_meta(self) -> dict[str, Any]:
        meta: dict[str, Any] = {"alpha": self.alpha_, "alpha_relative": self.alpha_relative_,
                                "rescale_factor": self.rescale_factor_}
        if self.cv_errors_ is not None:
            meta["alpha_grid_relative"] = list(F.ALPHA_GRID)
            meta["cv_errors"] = [float(e) if np.isfinite(e) else None for e in self.cv_errors_]
            meta["alpha_selection"] = self.alpha_selection_
        return meta

    def _set_extra(self, tensors: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        self.alpha_ = float(meta.get("alpha", 0.0))
        self.alpha_relative_ = float(meta.get("alpha_relative", 0.0))
        self.rescale_factor_ = float(meta.get("rescale_factor", 1.0))  # W already includes it
        errs = meta.get("cv_errors")
        self.cv_errors_ = None if errs is None else np.array([np.inf if e is None else e for e in errs])
        # Maps written before GCV chose alpha by K-fold validation whenever it was 'auto'.
        self.alpha_selection_ = meta.get(
            "alpha_selection", None if errs is None else f"{meta.get('params', {}).get('cv', 3)}-fold")


class LinearMap(AffineMap):
    """Least squares without a bias (through the origin of the preprocessed coordinates)."""

    method = "linear"
    bias = False


class RidgeMap(AffineMap):
    """Affine least squares with a ridge penalty; alpha chosen by GCV by default (see AffineMap).

    ``rescale=True`` (the default here) multiplies the solution by one factor that gives the
    anchors' predictions the targets' spread (:func:`.functional.spread_factor`): the penalty
    shrinks predictions towards the target mean, which a cosine (retrieval, prompts, heads on
    unit vectors) then sees in every sample alike. ``rescale=False`` is plain ridge regression.
    """

    method = "ridge"

    def __init__(
        self,
        *,
        alpha: float | str = "auto",
        center: bool = True,
        standardize: bool = True,
        l2: bool = False,
        restore: bool = True,
        cv: int | None = None,
        random_state: int = 0,
        rescale: bool = True,
    ) -> None:
        super().__init__(
            alpha=alpha, center=center, standardize=standardize, l2=l2, restore=restore, cv=cv,
            random_state=random_state, rescale=rescale,
        )


MAP_CLASSES: dict[str, type[BaseMap]] = {
    cls.method: cls for cls in (OrthogonalMap, AffineMap, LinearMap, RidgeMap)
}
METHODS = tuple(MAP_CLASSES)


def make_map(method: str, **params: Any) -> BaseMap:
    if method not in MAP_CLASSES:
        raise MapValueError(f"unknown map method {method!r}: choose one of {', '.join(METHODS)}")
    cls = MAP_CLASSES[method]
    allowed = set(cls._get_param_names())
    unknown = [k for k, v in params.items() if k not in allowed and v is not None]
    if unknown:
        takers = {k: [m for m, c in MAP_CLASSES.items() if k in c._get_param_names()] for k in unknown}
        raise MapValueError(f"method {method!r} takes no option " + "; ".join(
            f"{k} (it applies to {', '.join(takers[k]) or 'no method'})" for k in unknown))
    return cls(**{k: v for k, v in params.items() if k in allowed and v is not None})


def load_map(path: str | Path) -> BaseMap:
    """A fitted map from a file written by :meth:`BaseMap.save`."""
    from ..artifacts import load_artifact
    from ..fitted_on import META_KEY, FittedOn

    tensors, meta = load_artifact(path, MAP_KIND)
    method = meta.get("method")
    if method not in MAP_CLASSES:
        raise UsageError(f"{path}: unknown map method {method!r}; upgrade stitchkit")
    cls = MAP_CLASSES[method]
    m = cls(**meta.get("params", {}))
    m.W_ = tensors["W"]
    m.b_ = tensors["b"]
    m.pre_ = F.Preprocessing(tensors["x_mean"], tensors["x_scale"], tensors["y_mean"], tensors["y_scale"])
    m.n_anchors_ = int(meta["n_anchors"])
    m.n_features_in_ = int(meta["n_features_in"])
    m.n_features_out_ = int(meta["n_features_out"])
    m.source_space_ = meta.get("source", {})
    m.target_space_ = meta.get("target", {})
    m.anchors_ = meta.get("anchors", {})
    m.metrics_ = meta.get("metrics", {})
    m.fitted_on_ = FittedOn.read(tensors, meta.get(META_KEY))  # unknown for a map fitted before
    m.path_ = str(path)
    m._set_extra(tensors, meta)
    m._fold()
    return m

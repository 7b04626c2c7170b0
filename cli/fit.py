"""`stitch fit`: fit a map from a source store's space to a target store's over shared anchors."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click

from stitchkit.maps.anchors import STRATEGIES
from stitchkit.maps.estimators import METHODS
from stitchkit.maps.token_pairs import GRIDS

from .output import emit, emit_record, progress, show_warnings
from .vocabulary import deprecated_alias, take_alias


def _alpha(value: str | None) -> float | str | None:
    if value is None or value == "auto":
        return value
    try:
        alpha = float(value)
    except ValueError as exc:
        raise click.BadParameter(f"--alpha takes 'auto' or a number ≥ 0, got {value!r}") from exc
    if not alpha >= 0:
        raise click.BadParameter(f"--alpha takes 'auto' or a number ≥ 0, got {value!r}")
    return alpha


@click.command()
@click.argument("source")
@click.argument("target")
@click.option("-o", "--output", default=None, type=click.Path(dir_okay=False, path_type=str),
              help="Map file to write (safetensors + JSON metadata); required unless --dry-run.")
@click.option("--method", type=click.Choice(METHODS), default="ridge", show_default=True,
              help="ridge: affine least squares with alpha chosen by GCV; affine / linear: plain "
                   "least squares with / without bias; orthogonal: Procrustes.")
@click.option("--alpha", default=None, show_default="auto for ridge, 0 for affine/linear",
              help="Ridge penalty: 'auto' (generalised cross-validation over the fit anchors) or a number.")
@click.option("--scale", is_flag=True, help="Orthogonal only: also fit an isotropic scale factor.")
@click.option("--rescale/--no-rescale", default=None, show_default="on for ridge, off for affine/linear",
              help="Multiply the solution by one factor that gives the anchors' predictions the "
                   "targets' spread (ridge shrinks them towards the target mean, which cosine "
                   "retrieval and prompts then see in every sample).")
@click.option("--center/--no-center", default=True, show_default=True,
              help="Subtract the anchors' means.")
@click.option("--standardize/--no-standardize", default=True, show_default=True,
              help="Divide by the anchors' standard deviations (standard scaling).")
@click.option("--l2", is_flag=True, help="L2-normalise every row before anything else.")
@click.option("--restore/--no-restore", default=True, show_default=True,
              help="Restore the target's mean and scale after the map, so outputs live in the target space.")
@click.option("--ids", "ids_file", type=click.Path(dir_okay=False, path_type=str), callback=take_alias,
              help="Use only these ids as anchors: a file, one id per line (default: every id both stores share).")
@deprecated_alias("--anchors", "--ids", "ids_file", type=click.Path(dir_okay=False, path_type=str))
@click.option("--n-anchors", type=click.IntRange(min=1), default=None,
              help="Use only N of the anchors (after the holdout), chosen with --strategy.")
@click.option("--strategy", type=click.Choice(STRATEGIES), default="random", show_default=True,
              help="How --n-anchors are chosen.")
@click.option("--holdout", type=click.FloatRange(0.0, 1.0, max_open=True), default=0.2,
              show_default=True, help="Fraction of anchors held out for the quality report.")
@click.option("--refit/--no-refit", default=True, show_default=True,
              help="Measure the map on the held-out anchors, then write it refitted on all the "
                   "anchors (fit + held out), as scikit-learn's refit.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the holdout split, the selection and the CV folds.")
@click.option("--cv", type=click.IntRange(min=2), default=None,
              help="Choose --alpha auto by K-fold validation instead of GCV (default: generalised "
                   "cross-validation from one eigendecomposition, one pass over the anchors).")
@click.option("--pool-by", type=click.Choice(["group"]), default=None,
              help="Average each group's views (e.g. a study's images) into one anchor first.")
@click.option("--chunk-size", type=click.IntRange(min=1), default=16384, show_default=True,
              help="Rows read per chunk (memory stays O(D²) plus one chunk).")
@click.option("--exact", is_flag=True,
              help="Compute chunk products in float64 (about 3x slower; sums are float64 anyway).")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="ray: one task per source shard computes its statistics; they are reduced.")
@click.option("--address", default=None, help="Ray cluster to join (with --engine ray); default a local Ray.")
@click.option("--unpaired", type=click.IntRange(min=0), default=0, show_default=True,
              help="Refine the map with up to N samples per store that are not anchors (no "
                   "pairing used): mutual nearest neighbours become pseudo-anchors, refitted.")
@click.option("--refine-iterations", type=click.IntRange(min=1), default=3, show_default=True,
              help="Rounds of pseudo-anchor refinement (with --unpaired).")
@click.option("--tokens", "on_tokens", is_flag=True,
              help="Fit on spatially matched patch tokens (every image × grid position is a "
                   "pair) instead of pooled vectors: the map for token heads. Both stores need "
                   "square token grids (stitch embed --tokens); the map stays affine.")
@click.option("--token-grid", type=click.Choice(GRIDS),
              default="target", show_default=True,
              help="With --tokens: the grid both sides are resampled onto (area-weighted down, "
                   "bilinear up), e.g. target: Lite0 7x7 upsampled to Lite2's 9x9.")
@click.option("--pooled-weight", type=click.IntRange(min=0), default=0, show_default=True,
              help="With --tokens: also add each image's pooled pair this many times.")
@click.option("--require", "requirements", multiple=True, metavar="METRIC>=VALUE",
              help="Quality gate on a held-out metric (>=, <=, >, <; repeatable): when the map "
                   "falls short, write nothing and exit 1.")
@click.option("--dry-run", is_flag=True,
              help="Fit nothing: report linear CKA, mutual k-NN overlap and the expected held-out "
                   "quality (cross-validated on the fit anchors).")
@click.option("--knn-k", type=click.IntRange(min=1), default=10, show_default=True,
              help="k of the mutual k-NN overlap (--dry-run).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def fit(source: str, target: str, output: str | None, method: str, alpha: str | None, scale: bool,
        rescale: bool | None,
        center: bool, standardize: bool, l2: bool, restore: bool, ids_file: str | None,
        n_anchors: int | None, strategy: str, holdout: float, refit: bool, seed: int, cv: int | None,
        pool_by: str | None, chunk_size: int, exact: bool, engine: str, address: str | None,
        unpaired: int, refine_iterations: int, on_tokens: bool, token_grid: str,
        pooled_weight: int, requirements: tuple[str, ...], dry_run: bool,
        knn_k: int, as_json: bool) -> None:
    """Fit a map from SOURCE's embedding space to TARGET's over the anchors both share.

    SOURCE and TARGET may each be several shard stores, as a quoted glob ('shards/lite0-*.h5')
    or a comma-separated list: their statistics are reduced without merging the shards.
    Anchors are the ids present in both stores (joined by id, any order). A held-out part of
    them measures the map: cosine, relative MSE, retrieval, CKA, and with labels a probe
    trained on native TARGET embeddings applied to mapped SOURCE embeddings.

    \b
    Examples:
      stitch fit lite0.h5 lite2.h5 -o lite0-to-lite2.map
      stitch fit lite0.h5 lite2.h5 -o l0-l2-orth.map --method orthogonal --n-anchors 500
      stitch fit lite0.h5 lite2.h5 -o l0-l2.map --n-anchors 250 --strategy stratified --json
      stitch fit minilm.h5 mpnet.h5 -o text.map --ids anchor-ids.txt --alpha 10
      stitch fit 'shards/lite0-*.h5' 'shards/lite2-*.h5' -o l0-l2.map --engine ray
      stitch fit lite0.h5 lite2.h5 -o l0-l2.map --require probe_auc_ratio>=0.98 --require top1>=0.5
      stitch fit minilm.h5 mpnet.h5 --dry-run
      stitch fit lite0.h5 lite2.h5 -o few.map --n-anchors 50 --unpaired 5000
      stitch fit lite0-tok.h5 lite2-tok.h5 -o lite0-to-lite2.tokens.map --tokens
    """
    from stitchkit.errors import StitchError
    from stitchkit.fileio import check_writable_dir
    from stitchkit.maps import AnchorPlan, ReadOptions, fit_map, make_map
    from stitchkit.maps.metrics import parse_requirement, unmet_requirements
    from stitchkit.maps.stream import LocalEngine

    show_warnings()
    if scale and method != "orthogonal":
        raise click.UsageError("--scale applies to --method orthogonal only")
    alpha_value = _alpha(alpha)
    if rescale is not None and method == "orthogonal":
        raise click.UsageError("--rescale applies to ridge, affine and linear maps, not orthogonal")
    if alpha_value is not None and method == "orthogonal":
        raise click.UsageError("--alpha applies to ridge, affine and linear maps, not orthogonal")
    try:
        gates = [parse_requirement(r) for r in requirements]
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--require") from None
    estimator = make_map(method, alpha=alpha_value, scale=scale or None, rescale=rescale, center=center,
                         standardize=standardize, l2=l2, restore=restore,
                         cv=cv if method in ("ridge", "affine", "linear") else None)
    plan = AnchorPlan(anchors=ids_file, n_anchors=n_anchors, strategy=strategy, holdout=holdout,
                      seed=seed, pool_by=pool_by, refit=refit, unpaired=unpaired,
                      refine_iterations=refine_iterations)
    if on_tokens:
        _check_token_options(dry_run=dry_run, pool_by=pool_by, engine=engine, unpaired=unpaired, l2=l2)
    elif token_grid != "target" or pooled_weight:
        raise click.UsageError("--token-grid and --pooled-weight apply with --tokens only")
    if dry_run:
        from stitchkit.maps import check_stitchability

        report = check_stitchability(source, target, estimator, plan, k=knn_k)
        emit(report, as_json=as_json, text=None if as_json else _dry_text(report))
        return
    if output is None:
        raise click.UsageError("Missing option '-o' / '--output' (or give --dry-run)")
    check_writable_dir(output)
    if on_tokens:
        from stitchkit.maps import TokenGrid, fit_token_map

        with progress_callback("fit: reading token pairs") as cb:
            m = fit_token_map(source, target, estimator, plan, ReadOptions(exact=exact, progress=cb),
                              TokenGrid(grid=token_grid, pooled_weight=pooled_weight))
    else:
        stats_engine: Any = LocalEngine()
        if engine == "ray":
            from stitchkit.engines.ray_stats import RayStats

            stats_engine = RayStats(address)
        with progress_callback("fit: reading anchors") as cb:
            read = ReadOptions(chunk_size=chunk_size, exact=exact, progress=cb, engine=stats_engine)
            m = fit_map(source, target, estimator, plan, read)
    unmet = unmet_requirements(m.metrics_, gates)
    if unmet:
        # Nothing is written, so a shell pipeline (`stitch fit ... && stitch apply ...`) stops.
        raise StitchError(f"map not written: {'; '.join(unmet)}")
    m.save(output)
    result = {
        "output": output,
        "method": m.method,
        "source": m.source_space_,
        "target": m.target_space_,
        "dims": [m.n_features_in_, m.n_features_out_],
        "anchors": m.anchors_,
        "metrics": m.metrics_,
    }
    if hasattr(m, "alpha_"):
        result["alpha"] = m.alpha_
        result["alpha_relative"] = m.alpha_relative_
    if m.method == "orthogonal":
        result["scale_factor"] = m.scale_
    emit_record("fit", result, as_json=as_json, text=None if as_json else _text(result))


def _text(r: dict) -> str:
    a = r["anchors"]
    lines = [
        f"wrote {r['output']}: {r['method']} map {r['dims'][0]} → {r['dims'][1]}",
        f"  anchors: {a['n_fit']} fit ({a['strategy']}), {a['n_heldout']} held out, "
        f"of {a['n_pool']} shared",
    ]
    if a.get("n_refit"):
        lines.append(f"  written map refitted on all {a['n_refit']} anchors (fit + held out; --no-refit keeps "
                     f"the {a['n_fit']})")
    if "tokens" in a:
        t = a["tokens"]
        how = ", ".join(f"{side} {t['source_grid' if side == 'source' else 'target_grid'][0]}²"
                        f" {t['resample'][side]}" for side in ("source", "target")
                        if t["resample"][side] != "none")
        lines.append(f"  fitted on {t['n_token_pairs']} matched token pairs on a "
                     f"{t['grid'][0]}x{t['grid'][1]} grid ({how or 'same grids'})"
                     + (f" + pooled pairs x{t['pooled_weight']}" if t["pooled_weight"] else "")
                     + "; affine, so it commutes with mean pooling")
    if "refinement" in a:
        ref = a["refinement"]
        lines.append(f"  refined with {ref['unpaired_source']} / {ref['unpaired_target']} unpaired "
                     f"samples: pseudo-anchors per round {ref['pseudo_pairs_per_round']}")
        if "anchors_only" in ref:
            lines.append("  anchors-only map, held out: " + ", ".join(
                f"{k} {v:.4f}" for k, v in ref["anchors_only"].items()))
    if "alpha" in r:
        lines.append(f"  alpha: {r['alpha']:.4g} ({r['alpha_relative']:.3g} × mean eigenvalue)")
    if "scale_factor" in r and r["scale_factor"] != 1.0:
        lines.append(f"  scale factor: {r['scale_factor']:.4g}")
    if r["metrics"]:
        lines.append("held-out quality:")
        lines.extend(format_metrics(r["metrics"]))
    else:
        lines.append("held-out quality: none (no held-out anchors)")
    return "\n".join(lines)


def _check_token_options(*, dry_run: bool, pool_by: str | None, engine: str, unpaired: int,
                         l2: bool) -> None:
    """Options a fit on matched tokens does not take: one clear line each."""
    for bad, name in ((dry_run, "--dry-run"), (pool_by, "--pool-by"), (engine != "local", "--engine ray"),
                      (unpaired, "--unpaired"),
                      (l2, "--l2 (an L2-normalised map does not commute with mean pooling)")):
        if bad:
            raise click.UsageError(f"--tokens does not combine with {name}")


def _dry_text(r: dict) -> str:
    lines = [
        f"dry run ({r['method']}): {r['n_anchors']} fit anchors ({r['n_measured']} measured), "
        f"{r['n_heldout']} held out, nothing written",
        f"  linear CKA source/target           {r['linear_cka']:.4f}",
        f"  mutual k-NN overlap (k={r['mutual_knn_k']})         {r['mutual_knn']:.4f}"
        f"  (chance {r['mutual_knn_chance']:.4f})",
    ]
    if "expected_cosine_mean" in r:
        lines += [
            f"expected held-out quality ({r['cv_folds']}-fold CV on the fit anchors):",
            f"  cosine mean                        {r['expected_cosine_mean']:.4f}",
            f"  relative MSE (1 − R²)              {r['expected_relative_mse']:.4f}  (median; folds "
            + ", ".join(f"{v:.3f}" for v in r["expected_relative_mse_folds"]) + ")",
            f"  retrieval top-1 (gallery {r['expected_top1_gallery']})       {r['expected_top1']:.4f}",
        ]
    else:
        lines.append("expected held-out quality: too few anchors to cross-validate")
    return "\n".join(lines)


# -- helpers shared with apply, sweep and anchors ------------------------------------------
@contextmanager
def progress_callback(description: str) -> Iterator[Callable[[int, int], None]]:
    """A ``(done, total)`` callback driving the shared progress bar / log lines."""
    with progress(description) as bar:
        yield bar.update


METRIC_LABELS = {
    "n_heldout": "held-out anchors",
    "cosine_mean": "cosine mean",
    "cosine_median": "cosine median",
    "relative_mse": "relative MSE (1 − R²)",
    "top1": "retrieval top-1",
    "top5": "retrieval top-5",
    "mrr": "retrieval MRR",
    "retrieval_distinct_targets": "distinct held-out targets",
    "cka_source_target": "linear CKA source/target",
    "cka_mapped_target": "linear CKA mapped/target",
    "probe_n_train": "probe trained on (native target)",
    "probe_accuracy_native": "probe accuracy native",
    "probe_accuracy_stitched": "probe accuracy stitched",
    "probe_accuracy_ratio": "probe accuracy ratio",
    "probe_auc_native": "probe AUC native",
    "probe_auc_stitched": "probe AUC stitched",
    "probe_auc_ratio": "probe AUC ratio",
}


def format_metrics(metrics: dict[str, Any], indent: str = "  ") -> list[str]:
    lines = []
    for key, value in metrics.items():
        label = METRIC_LABELS.get(key, key)
        text = f"{value:.4f}" if isinstance(value, float) else str(value)
        if key in ("top1", "top5", "mrr") and "retrieval_distinct_targets" in metrics:
            text = f"n/a (only {metrics['retrieval_distinct_targets']} distinct targets)"
        lines.append(f"{indent}{label:<34} {text}")
    return lines


def parse_int_list(text: str, what: str) -> list[int]:
    try:
        values = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError as exc:
        raise click.BadParameter(f"{what} takes comma-separated integers, got {text!r}") from exc
    if not values:
        raise click.BadParameter(f"{what} is empty")
    return values

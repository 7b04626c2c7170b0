"""`stitch fit`: fit a map from a source store's space to a target store's over shared anchors."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from stitchkit.devices import ENGINES
from stitchkit.maps.api import MUTUAL_KNN_K
from stitchkit.maps.options import AnchorPlan, MapSettings, ReadOptions
from stitchkit.maps.token_pairs import TokenGrid

from .output import emit, emit_record, name_option, progress, show_warnings
from .settings import settings_options, take_settings
from .vocabulary import deprecated_alias, take_alias


@click.command()
@click.argument("source")
@click.argument("target")
@click.option("-o", "--output", default=None, type=click.Path(dir_okay=False, path_type=str),
              help="Map file to write (safetensors + JSON metadata); required unless --dry-run.")
@settings_options(MapSettings)
@click.option("--ids", "ids_file", type=click.Path(dir_okay=False, path_type=str), callback=take_alias,
              help="Use only these ids as anchors: a file, one id per line (default: every id both stores share).")
@deprecated_alias("--anchors", "--ids", "ids_file", type=click.Path(dir_okay=False, path_type=str))
@settings_options(AnchorPlan, skip=("anchors",))
@settings_options(ReadOptions)
@click.option("--tokens", "on_tokens", is_flag=True,
              help="Fit on spatially matched patch tokens (every image × grid position is a "
                   "pair) instead of pooled vectors: the map for token heads. Both stores need "
                   "square token grids (stitch embed --tokens); the map stays affine.")
@settings_options(TokenGrid)
@click.option("--require", "requirements", multiple=True, metavar="METRIC>=VALUE",
              help="Quality gate on a held-out metric (>=, <=, >, <; repeatable): when the map "
                   "falls short, write nothing and exit 1.")
@click.option("--dry-run", is_flag=True,
              help="Fit nothing: report linear CKA, mutual k-NN overlap and the expected held-out "
                   "quality (cross-validated on the fit anchors).")
@click.option("--knn-k", type=click.IntRange(min=1), default=MUTUAL_KNN_K, show_default=True,
              help="k of the mutual k-NN overlap (--dry-run).")
@click.option("--overwrite", is_flag=True, help="Replace a map already at -o (else it is refused).")
@name_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def fit(source: str, target: str, output: str | None, ids_file: str | None, on_tokens: bool,
        requirements: tuple[str, ...], dry_run: bool, knn_k: int, overwrite: bool, name: str | None,
        as_json: bool, **settings: Any) -> None:
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
      stitch fit 'shards/lite0-*.h5' 'shards/lite2-*.h5' -o l0-l2-shards.map --engine ray --name shards
      stitch fit lite0.h5 lite2.h5 -o l0-l2.map --overwrite --require probe_auc_ratio>=0.98 --require top1>=0.5
      stitch fit minilm.h5 mpnet.h5 --dry-run
      stitch fit lite0.h5 lite2.h5 -o few.map --n-anchors 50 --unpaired 5000
      stitch fit lite0-tok.h5 lite2-tok.h5 -o lite0-to-lite2.tokens.map --tokens
    """
    from stitchkit.errors import StitchError, UsageError
    from stitchkit.fileio import check_writable_dir
    from stitchkit.maps import fit_map
    from stitchkit.maps.metrics import parse_requirement, unmet_requirements
    from stitchkit.maps.records import fit_result

    show_warnings()
    try:
        gates = [parse_requirement(r) for r in requirements]
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--require") from None
    estimator = take_settings(MapSettings, settings).estimator()
    plan = take_settings(AnchorPlan, settings, anchors=ids_file)
    grid = take_settings(TokenGrid, settings)
    read = take_settings(ReadOptions, settings)
    if read.engine == "ray":
        from stitchkit.engines.ray_stats import RayStats

        read = replace(read, engine=RayStats(read.address))
    if on_tokens:
        _check_token_options(dry_run=dry_run, plan=plan, read=read, l2=estimator.l2)
    elif grid != TokenGrid():
        raise click.UsageError("--token-grid and --pooled-weight apply with --tokens only")
    if dry_run:
        from stitchkit.maps import check_stitchability

        report = check_stitchability(source, target, estimator, plan, k=knn_k)
        emit(report, as_json=as_json, text=None if as_json else _dry_text(report))
        return
    if output is None:
        raise click.UsageError("Missing option '-o' / '--output' (or give --dry-run)")
    check_writable_dir(output)
    if Path(output).exists() and not overwrite:
        raise UsageError(f"{output} already exists: pass --overwrite or choose another -o")
    if on_tokens:
        from stitchkit.maps import fit_token_map

        with progress_callback("fit: reading token pairs") as cb:
            m = fit_token_map(source, target, estimator, plan, replace(read, progress=cb), grid)
    else:
        with progress_callback("fit: reading anchors") as cb:
            m = fit_map(source, target, estimator, plan, replace(read, progress=cb))
    unmet = unmet_requirements(m.metrics_, gates)
    if unmet:
        # Nothing is written, so a shell pipeline (`stitch fit ... && stitch apply ...`) stops.
        raise StitchError(f"map not written: {'; '.join(unmet)}")
    m.save(output)
    result = fit_result(m, output)
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


def _check_token_options(*, dry_run: bool, plan: AnchorPlan, read: ReadOptions, l2: bool) -> None:
    """Options a fit on matched tokens does not take: one clear line each."""
    for bad, name in ((dry_run, "--dry-run"), (plan.pool_by, "--pool-by"), (read.engine != ENGINES[0], "--engine ray"),
                      (plan.unpaired, "--unpaired"),
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
            f"  relative MSE (median row)          {r['expected_relative_mse']:.4f}  (median; folds "
            + ", ".join(f"{v:.3f}" for v in r["expected_relative_mse_folds"]) + ")",
            f"  retrieval top-1 (gallery {r['expected_top1_gallery']})       {r['expected_top1']:.4f}",
        ]
    else:
        lines.append("expected held-out quality: too few anchors to cross-validate")
    rec = r.get("recommendation")
    if rec:
        methods = ", ".join(f"{m} {c:.3f}" for m, c in rec["methods_expected_cosine"].items())
        curve = ", ".join(f"{n} {c:.3f}" for n, c in rec["curve"])
        if rec["n_anchors"] < rec["pool"]:
            count = f"about {rec['n_anchors']} anchors (expected cosine within 0.01 of {rec['pool']}'s)"
        else:
            count = f"all {rec['pool']} anchors" + (" (still rising: more would help)" if rec["still_rising"] else "")
        lines += [f"recommended: --method {rec['method']} with {count}",
                  f"  expected cosine by method ({r['n_anchors']} anchors): {methods}",
                  f"  expected cosine by anchor count ({rec['method']}): {curve}"]
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
    "relative_mse": "relative MSE (median row)",
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

"""`stitch sweep`: held-out quality of maps against the anchor count, over methods and seeds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from stitchkit.maps.options import AnchorPlan
from stitchkit.maps.sweep import SweepGrid

from .output import emit_record, name_option, show_warnings
from .settings import settings_options, take_settings
from .vocabulary import deprecated_alias, take_alias


@click.command()
@click.argument("source", type=click.Path(dir_okay=False, path_type=str))
@click.argument("target", type=click.Path(dir_okay=False, path_type=str))
@settings_options(SweepGrid)
@settings_options(AnchorPlan, only=("strategy", "holdout"))
@click.option("--ids", "ids_file", type=click.Path(dir_okay=False, path_type=str), callback=take_alias,
              help="Use only these ids as anchors: a file, one id per line (default: every shared id).")
@deprecated_alias("--anchors", "--ids", "ids_file", type=click.Path(dir_okay=False, path_type=str))
@click.option("--l2", is_flag=True, help="L2-normalise rows before fitting.")
@click.option("-o", "--output", default="sweep.csv", show_default=True,
              type=click.Path(dir_okay=False, path_type=str),
              help="Table of mean ± std per method and count (.csv, or .json).")
@click.option("--plot", default=None, type=click.Path(dir_okay=False, path_type=str),
              help="PNG of the held-out metrics against the anchor count ('' for none). "
                   "Default: beside the table, with a .png suffix.")
@name_option
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def sweep(source: str, target: str, ids_file: str | None, l2: bool, output: str, plot: str | None,
          name: str | None, as_json: bool, **settings: Any) -> None:
    """Fit maps from SOURCE to TARGET for every anchor count × method × seed.

    Each seed fixes one holdout split (the same for every count and method) and one probe.

    \b
    Examples:
      stitch sweep lite0.h5 lite2.h5 --n-anchors 50,250,500,1000,2000 -o sweep.csv --plot sweep.png
      stitch sweep minilm.h5 mpnet.h5 --methods orthogonal,ridge --seeds 0,1 -o sweep.json --json
    """
    from stitchkit.maps.records import sweep_result
    from stitchkit.maps.sweep import summarize, write_table
    from stitchkit.maps.sweep import sweep as run_sweep
    from stitchkit.report.sweep_plot import plot_sweep

    show_warnings()

    def on_row(row: dict) -> None:
        what = row.get("error") or f"cos {row.get('cosine_mean', float('nan')):.3f} top1 {row.get('top1', float('nan')):.3f}"
        click.echo(f"sweep: seed {row['seed']} n {row['n_anchors']} {row['method']}: {what}", err=True)

    grid = take_settings(SweepGrid, settings, params={"l2": l2})
    plan = take_settings(AnchorPlan, settings, anchors=ids_file)
    rows = run_sweep(source, target, grid, plan, on_row=on_row)
    summary = summarize(rows)
    write_table(summary, output)
    if plot is None:
        plot = str(Path(output).with_suffix(".png"))
    if plot:
        plot_sweep(summary, plot, title=f"{source} → {target}")
    emit_record("sweep", sweep_result(summary, output, plot), as_json=as_json,
         text=None if as_json else _text(summary, output, plot))


def _text(summary: list[dict], output: str, plot: str) -> str:
    cols = [("cosine_mean", "cosine"), ("top1", "top-1"), ("mrr", "MRR"),
            ("relative_mse", "rel.MSE"), ("probe_auc_ratio", "AUC ratio")]
    cols = [c for c in cols if any(f"{c[0]}_mean" in e for e in summary)]
    head = f"{'method':<11} {'anchors':>7}  " + "  ".join(f"{label:>15}" for _, label in cols)
    lines = [head]
    for e in summary:
        cells = []
        for key, _ in cols:
            if f"{key}_mean" in e:
                cells.append(f"{e[f'{key}_mean']:>7.3f} ± {e[f'{key}_std']:.3f}")
            else:
                cells.append(f"{'—':>15}")
        line = f"{e['method']:<11} {e['n_anchors']:>7}  " + "  ".join(cells)
        if e.get("error"):
            line += f"  ({e['n_failed']} failed: {e['error']})"
        lines.append(line)
    lines.append(f"wrote {output}" + (f" and {plot}" if plot else ""))
    return "\n".join(lines)

"""`stitch report`: figures and a page for any run's files, recognised by their content."""

from __future__ import annotations

import click

from .output import emit


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=str))
@click.option("-o", "--output", default=None, type=click.Path(file_okay=False, path_type=str),
              help="Folder for the PNGs, index.html and report.md  [default: PATH/report for one folder, else ./report]")
@click.option("--title", default="stitchkit report", show_default=True, help="Title of the page.")
@click.option("--markdown", is_flag=True, help="Also print report.md (every figure's numbers) on stdout.")
@click.option("--json", "as_json", is_flag=True, help="Print the written paths as JSON.")
def report(paths: tuple[str, ...], output: str | None, title: str, markdown: bool, as_json: bool) -> None:
    """Draw what a run did, from its files whatever their names.

    PATH is a file or a folder (searched recursively). Maps give held-out metrics, relative MSE
    and the anchor plan; sweep CSVs give curves with error bars; heads give loss curves; score
    files (with the `--json` of `stitch classify`) give ROC per class, score histograms, a
    confusion matrix and a calibration curve, and every route on one data set shares its ROC
    figure (small panels of at most 8 curves, grouped as the run groups its routes); a map with
    stores of both its spaces gives a PCA of native and mapped. The page opens with the run's
    results table (`stitch demo`'s routes, else the classify results); index.html and report.md
    state every figure's numbers.

    \b
    Examples:
      stitch report demo-out
      stitch report lite0-to-lite2.map sweep.csv head.head scores.csv classify.json -o rep
      stitch report demo-out --markdown > report.md
    """
    from pathlib import Path

    from stitchkit.report.build import build_report

    if output is None:
        output = str(Path(paths[0]) / "report") if len(paths) == 1 and Path(paths[0]).is_dir() else "report"
    result = build_report(list(paths), output, title=title)
    if markdown:
        click.echo(Path(result["markdown"]).read_text(encoding="utf-8"))
        return
    emit(result, as_json=as_json, text="\n".join([f"report: {result['report']}", *(f"  {p}" for p in result["figures"])]))

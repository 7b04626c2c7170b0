"""`stitch report`: figures and a page from a demo or experiment folder."""

from __future__ import annotations

import click

from .output import emit


@click.command()
@click.argument("folder", type=click.Path(file_okay=False, path_type=str))
@click.option("-o", "--output", default=None, type=click.Path(file_okay=False, path_type=str),
              help="Folder for the PNGs, index.html and report.md  [default: FOLDER/report]")
@click.option("--json", "as_json", is_flag=True, help="Print the written paths as JSON.")
def report(folder: str, output: str | None, as_json: bool) -> None:
    """Draw anchor curves, ROC curves, a score heatmap, cosine histograms and a PCA of FOLDER.

    FOLDER is what `stitch demo` writes (stores, maps, sweep.csv, scores/); figures whose
    inputs are missing are left out.

    \b
    Examples:
      stitch report demo-out
      stitch report demo-out -o /tmp/report --json
    """
    from pathlib import Path

    from stitchkit.report.demo_report import build_report

    result = build_report(folder, output or Path(folder) / "report")
    emit(result, as_json=as_json, text="\n".join([f"report: {result['report']}", *(f"  {p}" for p in result["figures"])]))

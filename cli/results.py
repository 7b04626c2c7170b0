"""`stitch results`: gather many runs' `--json` results into one table (CSV or Markdown)."""

from __future__ import annotations

import click

from .output import emit


@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=str))
@click.option("-o", "--output", default=None, type=click.Path(dir_okay=False, path_type=str),
              help="Write the table here; .csv or .md picks the format  [default: Markdown on stdout]")
@click.option("--columns", default=None,
              help="Comma-separated columns: record fields (route, dataset, model, task, n_anchors...) "
                   "or metric names (auc_pneumonia, cosine_mean...)  [default: dataset, model, task and every metric]")
@click.option("--task", "tasks", multiple=True,
              help="Keep only records of this task (zeroshot_classification, map_fit, anchor_sweep, head_train); repeatable.")
@click.option("--digits", default=3, show_default=True, type=click.IntRange(0, 12),
              help="Decimals in the Markdown table (CSV keeps full precision).")
@click.option("--json", "as_json", is_flag=True, help="Print the records as JSON instead of a table.")
def results(files: tuple[str, ...], output: str | None, columns: str | None, tasks: tuple[str, ...],
            digits: int, as_json: bool) -> None:
    """Gather result records (what `--json` printed) into one table, one row per run.

    Reads the output of `stitch fit|classify|sweep|head train --json` and `stitch demo`'s
    results/demo-results.json; a sweep gives one row per method and anchor count.

    \b
    Examples:
      stitch classify k-test-lite2.h5 --head head.head --prompts pneumonia --json > native.json
      stitch classify k-test-lite0.h5 --map lite0-to-lite2.map --head head.head --prompts pneumonia --json > stitched.json
      stitch results native.json stitched.json -o table.csv
      stitch results demo-out/results/demo-results.json --columns route,auc_pneumonia,accuracy,n -o table.md
    """
    from pathlib import Path

    from stitchkit.errors import UsageError
    from stitchkit.fileio import atomic_output
    from stitchkit.results import load_records, table, to_csv, to_markdown

    records = load_records(files)
    if tasks:
        records = [r for r in records if r.get("task") in tasks]
        if not records:
            raise UsageError(f"no record of task {', '.join(tasks)} in the files given")
    cols = [c.strip() for c in columns.split(",") if c.strip()] if columns else None
    header, rows = table(records, cols)
    if as_json:
        emit({"records": records}, as_json=True)
        return
    if output is None:
        click.echo(to_markdown(header, rows, digits), nl=False)
        return
    suffix = Path(output).suffix.lower()
    if suffix not in (".csv", ".md"):
        raise UsageError(f"{output}: give a .csv or .md file name for -o")
    text = to_csv(header, rows) if suffix == ".csv" else to_markdown(header, rows, digits)
    with atomic_output(output) as tmp:
        tmp.write_text(text, encoding="utf-8")
    click.echo(f"table: {output} ({len(rows)} rows, {len(header)} columns)")

"""`stitch import`: a clip-retrieval embedding folder back into an HDF5 store."""

from __future__ import annotations

import click

from .output import emit


@click.command("import")
@click.argument("folder", type=click.Path(file_okay=False, path_type=str))
@click.option("-o", "--output", "output", required=True, type=click.Path(dir_okay=False, path_type=str), help="Store to write (.h5).")
@click.option("--overwrite", is_flag=True, help="Replace an existing store.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def import_cmd(folder: str, output: str, overwrite: bool, as_json: bool) -> None:
    """Read FOLDER (img_emb/ or text_emb/ + metadata/, as `stitch export` or clip-retrieval
    write it) into a store that fit, apply and classify take.

    Ids come from the metadata's id column (else key, image_path or url, else row numbers);
    a folder written by `stitch export` keeps its model and weights provenance.

    \b
    Examples:
      stitch import lite0-emb -o lite0-again.h5
      stitch import clip-retrieval-out/ -o laion-subset.h5
    """
    from stitchkit.export import import_folder

    result = import_folder(folder, output, overwrite=overwrite)
    text = (f"wrote {result['path']}: {result['rows']} rows x {result['dim']} dims; provenance "
            f"{result['provenance']}")
    emit(result, as_json=as_json, text=text)

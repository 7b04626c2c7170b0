"""`stitch export`: a store as clip-retrieval's npy + parquet folder, for autofaiss."""

from __future__ import annotations

from typing import Any

import click

from stitchkit.export import ExportOptions

from .output import emit
from .settings import settings_options, take_settings


@click.command()
@click.argument("store", type=click.Path(dir_okay=False, path_type=str))
@click.option("-o", "--output", "output", required=True, type=click.Path(file_okay=False, path_type=str), help="Folder to write.")
@settings_options(ExportOptions)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def export(store: str, output: str, as_json: bool, **settings: Any) -> None:
    """Write STORE in clip-retrieval's layout: img_emb/ (or text_emb/) + metadata/.

    autofaiss and clip-retrieval index the folder unchanged; `stitch import` reads it back.

    \b
    Examples:
      stitch export lite0.h5 -o lite0-emb
      autofaiss build_index --embeddings lite0-emb/img_emb --index_path knn.index --index_infos_path infos.json
      stitch export big.h5 -o big-emb --chunk-size 100000 --dtype float16
    """
    from stitchkit.export import export_store

    result = export_store(store, output, take_settings(ExportOptions, settings))
    text = (f"wrote {result['path']}: {result['rows']} rows x {result['dim']} dims in {result['chunks']} "
            f"chunk(s) under {result['embeddings']}/, metadata columns {', '.join(result['columns'])}")
    emit(result, as_json=as_json, text=text)

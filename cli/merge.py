"""`stitch merge`: join shard stores into one."""

from __future__ import annotations

import click

from .output import emit


@click.command()
@click.argument("shards", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=str))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=str), help="Merged store to write.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def merge(shards: tuple[str, ...], output: str, as_json: bool) -> None:
    """Merge complete SHARDS of one model into one store.

    Refuses shards of different models or shapes, overlapping ids and unfinished shards.

    \b
    Examples:
      stitch merge shard-*.h5 -o all.h5
    """
    from stitchkit.store.merge import merge_stores

    result = merge_stores(shards, output)
    emit(result, as_json=as_json, text=f"wrote {output}: {result['samples']} samples from {result['shards']} shards")

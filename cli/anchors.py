"""`stitch anchors`: make anchor id lists from a store."""

from __future__ import annotations

import click

from stitchkit.maps.options import AnchorPlan

from .output import emit, show_warnings
from .settings import settings_options


@click.group()
def anchors() -> None:
    """Select anchor sets from a store (for `stitch fit --ids FILE`).

    \b
    Examples:
      stitch anchors select lite0.h5 -o anchors-500.txt --n 500 --strategy stratified
    """


@anchors.command("select")
@click.argument("store", type=click.Path(dir_okay=False, path_type=str))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=str),
              help="Text file to write, one id per line.")
@click.option("-n", "--n", "n", required=True, type=click.IntRange(min=1), help="How many anchors.")
@settings_options(AnchorPlan, only=("strategy", "seed"))
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def select(store: str, output: str, n: int, strategy: str, seed: int, as_json: bool) -> None:
    """Choose N anchor ids from STORE and write them to a file.

    \b
    Examples:
      stitch anchors select lite0.h5 -o anchors-500.txt --n 500 --strategy stratified
      stitch anchors select lite0.h5 -o anchors-250.txt --n 250 --strategy kmeans --seed 1
    """
    from collections import Counter
    from pathlib import Path

    from stitchkit.fileio import check_writable_dir, write_id_file
    from stitchkit.label_use import LABEL_USE_FIELD, NONE
    from stitchkit.maps.anchors import select_from_store, selection_label_use
    from stitchkit.store import EmbeddingStore

    show_warnings()
    check_writable_dir(output)
    with EmbeddingStore(store) as s:
        ids = select_from_store(s, n, strategy=strategy, seed=seed)
        label_use = selection_label_use(strategy, n, len(s), Path(store).name)
        labels = s.labels
        counts = (
            dict(Counter(str(v) for v in labels[s.index_of(ids)]).most_common())
            if labels is not None else None
        )
    # The header (comments, which every reader of id lists skips) says how the ids were chosen;
    # `stitch fit --ids FILE` records the label use in the map, and results through it say so.
    write_id_file(output, ids, header=[
        f"stitch anchors select {Path(store).name} -n {n} --strategy {strategy} --seed {seed}",
        f"{LABEL_USE_FIELD}: {label_use or NONE}",
    ])
    result = {"output": output, "n": int(len(ids)), "strategy": strategy, "seed": seed,
              "labels": counts, "label_use": label_use}
    text = f"wrote {output}: {len(ids)} ids ({strategy}, seed {seed})"
    if counts:
        text += "\n  labels: " + ", ".join(f"{k} {v}" for k, v in counts.items())
    if label_use:
        text += f"\n  label use: {label_use} (a map fitted on these anchors records it)"
    emit(result, as_json=as_json, text=text)

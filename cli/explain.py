"""`stitch explain`: where a head or a map looks in each image, one heatmap per class."""

from __future__ import annotations

from typing import Any

import click

from stitchkit.explain import ExplainOptions
from stitchkit.zeroshot.classify_plan import ClassifyOptions
from stitchkit.zeroshot.patches import PatchOptions

from .devices import DEVICE_PARSING
from .output import emit, show_warnings
from .settings import settings_options, take_settings


@click.command()
@click.argument("store", type=click.Path(dir_okay=False))
@click.option("--ids", "ids_file", required=True, type=click.Path(exists=True, dir_okay=False),
              help="The images to draw (a text file, one id of STORE per line).")
@click.option("--prompts", "prompt_file", required=True,
              help="Prompt file (YAML/JSON) or a curated set's short name (pneumonia, cxr14): a heatmap per class.")
@click.option("-t", "--text-model", default=None,
              help="Text model that embeds the prompts (e.g. minilm). Default with --head: the head's.")
@click.option("--map", "map_path", type=click.Path(dir_okay=False), default=None,
              help="Map from STORE's space into the head's image space (or the text space for cosine / patch).")
@click.option("--head", "head_path", type=click.Path(dir_okay=False), default=None,
              help="Token head (from `stitch head train`): draws its attention over the image tokens.")
@settings_options(ClassifyOptions, only={"scoring", "force_space", "device"}, extra={"device": DEVICE_PARSING})
@settings_options(PatchOptions, only={"patch_temperature"})
@settings_options(ExplainOptions)
@click.option("-o", "--output", "out", required=True, type=click.Path(file_okay=False),
              help="Folder for a PNG and a JSON per image and explain.json.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def explain(store: str, ids_file: str, prompt_file: str, text_model: str | None, map_path: str | None,
            head_path: str | None, out: str, as_json: bool, **settings: Any) -> None:
    """Draw where the scorer looks in each image of STORE (a token store): one heatmap per class
    over the patch grid, with the grid's values as JSON.

    With --head, the head's attention over the image tokens (a query mapped from another model
    is resampled onto the head's grid, as scoring does); with --map into the text space and
    --scoring cosine or patch, each patch token's cosine with the class through that map
    (--show attention: the weights patch scoring pools with). The images are read from the
    input the store records (`stitch info STORE`), or from --source.

    \b
    Examples:
      stitch explain k-test-lite2-tok.h5 --ids few.ids --head token-head.st --prompts pneumonia -o explain-head
      stitch explain k-test-lite0-tok.h5 --ids few.ids --map lite0-to-lite2.tokens.map --head token-head.st --prompts pneumonia -o explain-lite0
      stitch explain k-test-lite0-tok.h5 --ids few.ids --map lite0-to-minilm.map --scoring patch --prompts pneumonia -t minilm -o explain-patch
      stitch explain k-test-lite0-tok.h5 --ids few.ids --map lite0-to-minilm.map --scoring cosine --prompts pneumonia -t minilm --source test.csv -o explain-cosine
    """
    show_warnings()
    from stitchkit.explain import explain as run_explain
    from stitchkit.fileio import read_id_file
    from stitchkit.zeroshot.prompts import load_prompts

    patch = take_settings(PatchOptions, settings)
    classify = take_settings(ClassifyOptions, settings, text_model=text_model, map_path=map_path,
                             head_path=head_path, ids=read_id_file(ids_file), patch=patch)
    options = take_settings(ExplainOptions, settings, classify=classify)
    result = run_explain(store, load_prompts(prompt_file), out, options)
    emit(result.to_dict(), as_json=as_json, text=result.text())

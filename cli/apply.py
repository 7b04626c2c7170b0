"""`stitch apply`: write a store mapped into a map's target space."""

from __future__ import annotations

from typing import Any

import click

from stitchkit.maps.options import ApplyOptions

from .devices import DEVICE_PARSING
from .fit import progress_callback
from .output import emit, show_warnings
from .settings import settings_options, take_settings
from .vocabulary import deprecated_alias, take_alias


@click.command()
@click.argument("map_path", metavar="MAP", type=click.Path(dir_okay=False, path_type=str))
@click.argument("store", type=click.Path(dir_okay=False, path_type=str))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=str),
              help="Stitched store to write (.h5).")
@settings_options(ApplyOptions, extra={"force_space": {"callback": take_alias}, "device": DEVICE_PARSING})
@deprecated_alias("--force", "--force-space", "force_space", is_flag=True)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def apply(map_path: str, store: str, output: str, as_json: bool, **settings: Any) -> None:
    """Map every embedding of STORE with MAP into the map's target space.

    The output is a normal store (ids, labels, groups and texts copied) whose model_spec is the
    target's, with `map` and `source` attributes naming where it came from. STORE must come from
    the model the map was fitted on (model spec and weights hash), unless --force-space.

    Tokens (from `stitch embed --tokens`) are mapped per token, a bounded number of rows at a
    time. For a mean-pooled CNN (Lite0, Lite2) an affine map commutes with the pooling, so the
    mean of the mapped tokens is the mapped global; for a CLS-token ViT it does not, and the
    output says so. For a token head, use a map fitted on matched tokens (`stitch fit
    --tokens`): it is affine too, so the same identities hold, and it carries single tokens
    better than a map fitted on pooled vectors.

    \b
    Examples:
      stitch apply lite0-to-lite2.map lite0-test.h5 -o lite0-test-in-lite2.h5
      stitch apply lite0-to-lite2.map other-lite0.h5 -o out.h5 --json
      stitch apply lite0-to-lite2.map k-test-lite0-tok.h5 -o k-test-lite0-in-lite2-tok.h5
      stitch apply lite0-to-lite2.tokens.map k-test-lite0-tok.h5 -o k-test-lite0-in-lite2-tok.h5
    """
    from stitchkit.maps import apply_map

    show_warnings()
    with progress_callback("apply") as cb:
        result = apply_map(map_path, store, output, take_settings(ApplyOptions, settings, progress=cb))
    text = (f"wrote {output}: {result['samples']} samples, {result['dim_in']} → {result['dim_out']} "
            f"(target space {result['target_model_spec']})")
    if "tokens" in result:
        text += f"\ntokens: {result['tokens'][0]} per sample, {result['tokens_note']}"
    emit(result, as_json=as_json, text=text)

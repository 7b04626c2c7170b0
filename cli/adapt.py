"""`stitch adapt`: fit a label-free adaptation map on unlabelled images of the target domain."""

from __future__ import annotations

import click

from .output import emit, show_warnings


def _default_dims() -> float:
    from stitchkit.maps.adapt import DEFAULT_DIMS

    return DEFAULT_DIMS


@click.command()
@click.argument("store", type=click.Path(dir_okay=False, path_type=str))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=str),
              help="Adaptation map to write (.map).")
@click.option("--ids", "ids_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Adapt on these ids only (a text file, one id per line), e.g. the training patients' images.")
@click.option("--dims", type=click.FloatRange(min=0, min_open=True), default=_default_dims, show_default="16.0",
              help="Effective dimensions the map keeps: the ridge penalty α solves Σ λ/(λ+α) = dims over the "
                   "domain's standardised spectrum (fewer: stronger shrinkage).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def adapt(store: str, output: str, ids_file: str | None, dims: float, as_json: bool) -> None:
    """Fit an adaptation map on STORE's images (the target domain, labels never read).

    A ridge map of the domain's embeddings onto themselves: queries move to the domain's mean
    and toward its main directions of variation. Pass it to `stitch classify --adapt` or
    `stitch benchmark --adapt`; `stitch apply` applies it like any map. STORE must be in the
    space the head or the cosine map reads (for a stitched route, the store mapped there with
    `stitch apply`). It helps scorers fitted off the domain (zero-shot heads, cosine maps); a
    head trained on the domain's own labelled images loses by it (docs/maps.md).

    \b
    Examples:
      stitch adapt k-train-lite2.h5 -o kermany.adapt.map
      stitch adapt nih-lite2.h5 --ids nih-train-ids.txt -o nih.adapt.map --json
      stitch adapt lite0-test-in-lite2.h5 --dims 4 -o stitched-queries.adapt.map
    """
    from stitchkit.fileio import check_writable_dir
    from stitchkit.maps.adapt import fit_adaptation

    show_warnings()
    check_writable_dir(output)
    m = fit_adaptation(store, ids=ids_file, dims=dims)
    m.save(output)
    info = m.anchors_["adaptation"]
    result = {"output": output, "images": m.n_anchors_, "space": m.source_space_.get("model_spec"),
              "dim": m.n_features_in_, **info}
    text = (f"wrote {output}: adaptation on {m.n_anchors_} images of {result['space']} ({m.n_features_in_}-d), "
            f"{info['dims']:g} effective dimensions kept (ridge α {info['alpha']:.4g} on the standardised embeddings)")
    emit(result, as_json=as_json, text=text)

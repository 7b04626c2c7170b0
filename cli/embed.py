"""`stitch embed`: run an encoder over images or texts and write an HDF5 store."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import click

from stitchkit.devices import ENGINES
from stitchkit.embed_options import EmbedOptions, EncoderOptions, RayOptions
from stitchkit.inputs.grey import DEFAULT_GREY_RANGE, GREY_RANGES
from stitchkit.inputs.types import Columns

from .devices import DEVICE_PARSING
from .output import emit, progress, show_warnings
from .settings import settings_options, take_settings


@click.command()
@click.argument("source", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("-m", "--model", "model", required=True, help="Short name (see `stitch models`) or backend:name?key=value spec.")
@click.option("-o", "--output", "output", required=True, type=click.Path(dir_okay=False, path_type=str), help="Store to write (.h5).")
@settings_options(EncoderOptions, extra={"device": DEVICE_PARSING})
@settings_options(EmbedOptions, extra={"token_grid": {"metavar": "HxW|full"}})
@click.option("--shard", default=None, help="Embed only shard i of N (i/N, split over sorted ids).")
@click.option("--root", default=None, type=click.Path(file_okay=False, path_type=str), help="Resolve manifest paths here and refuse paths outside it.")
@click.option("--where", multiple=True, metavar="COL=VALUE", help="Keep manifest rows whose COL equals VALUE (repeatable).")
@click.option("--ids", "ids_file", default=None, type=click.Path(dir_okay=False), help="Embed only the inputs whose id this file lists (one per line, '#' comments): e.g. the anchors alone.")
@settings_options(Columns, suffix="_column")
@click.option("--label-from", default=None, metavar="cls|txt|json:FIELD", help="WebDataset shards: where the label comes from [cls when every sample has one].")
@click.option("--dicom-tags", default=None, metavar="TAGS|default", help="Copy DICOM tags into the store: 'default' = StudyInstanceUID (as group),ViewPosition,PatientID; patient names never.")
@click.option("--grey-range", default=DEFAULT_GREY_RANGE, show_default=True, type=click.Choice(GREY_RANGES),
              help="Grey levels of DICOM and 16-bit PNG/TIFF without a VOI LUT or window: image = each "
                   "image's own min..max -> 0..255 (as MIMIC-CXR-JPG was made); stored = the nominal "
                   "stored range, e.g. 0..4095 of a 12-bit DICOM through its rescale. The store's "
                   "pixel_mapping records which rule each file took.")
@click.option("--engine", default=ENGINES[0], show_default=True, type=click.Choice(ENGINES),
              help="local: this process + DataLoader workers; ray: a Ray Data pipeline (pip install 'stitchkit[ray]').")
@settings_options(RayOptions)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def embed(source: tuple[str, ...], model: str, output: str, shard: str | None, root: str | None,
          where: tuple[str, ...], ids_file: str | None, label_from: str | None, dicom_tags: str | None,
          grey_range: str, engine: str, as_json: bool, **settings: Any) -> None:
    """Embed SOURCE into a store: an image folder (DICOM too), a CSV/JSONL manifest, a .txt
    file, WebDataset .tar shards (a list or a brace pattern) or a local Hugging Face dataset
    (a save_to_disk folder or .parquet files).

    Re-running the same command after a crash or Ctrl-C continues where it stopped.

    \b
    Examples:
      stitch embed ../shared/data/kermany-pneumonia-224/labels.csv --where split=test -m lite0 --tokens -o k-test-lite0.h5
      stitch embed ../shared/data/kermany-pneumonia-224/train -m lite2 -o k-train-lite2.h5 --tokens
      stitch embed images/ -m lite0 -o images-4x4.h5 --tokens --token-grid 4x4
      stitch embed reports.jsonl -m minilm -o reports-minilm.h5 --text-column report
      stitch embed images/ -m lite0 -o shard3.h5 --shard 3/16
      stitch embed images/ -m lite0 -o all.h5 --engine ray --address 10.0.0.1:6379
      stitch embed dicoms/ -m lite0 -o cxr.h5 --dicom-tags default
      stitch embed dicoms/ -m lite0 -o cxr-stored.h5 --grey-range stored
      stitch embed 'shards/{00000..00099}.tar' -m lite0 -o wds.h5 --label-from json:label --shard 0/4
      stitch embed hf-dataset/ -m lite0 -o hf.h5 --image-column image
      stitch embed images/ -m lite2 -o k-lite2.h5 --runtime torch
      stitch embed ../shared/data/kermany-pneumonia-224/labels.csv --ids anchor-ids.txt -m lite0 -o anchors-lite0.h5
    """
    from stitchkit.devices import device_name
    from stitchkit.embed import embed_store, parse_shard
    from stitchkit.encoders import load_encoder
    from stitchkit.encoders.registry import parse_spec
    from stitchkit.errors import StitchError, UsageError
    from stitchkit.fileio import read_id_file
    from stitchkit.inputs import Columns, read_inputs

    show_warnings()
    filters = {}
    for cond in where:
        key, sep, value = cond.partition("=")
        if not sep:
            raise UsageError(f"--where {cond!r}: use COL=VALUE")
        filters[key] = value
    cols = take_settings(Columns, settings, suffix="_column")
    read = {"columns": cols, "root": root, "where": filters, "label_from": label_from, "dicom_tags": dicom_tags,
            "grey_range": grey_range}
    encoding = take_settings(EncoderOptions, settings)
    ray = take_settings(RayOptions, settings)
    options = take_settings(EmbedOptions, settings, shard=parse_shard(shard))
    parse_spec(model)  # a misspelled spec option is refused before any input is listed
    if engine == "ray":
        if encoding.device.startswith("cuda:"):
            raise UsageError(f"--device {encoding.device} names a GPU of this machine; with --engine ray use "
                             "--device cuda (Ray gives each actor a GPU of the cluster)")
        if encoding.runtime != EncoderOptions().runtime:
            raise UsageError("--runtime needs --engine local (Ray actors pick their runtime as auto does)")
        if grey_range != DEFAULT_GREY_RANGE:
            raise UsageError("--grey-range stored needs --engine local (Ray decodes by the image range)")
        from stitchkit.engines.ray_engine import embed_store_ray, require_ray

        require_ray()  # say a missing extra before reading inputs or loading a model
        inputs = read_inputs(list(source), **read)  # the engine refuses formats it cannot read
        if ids_file:
            inputs = inputs.only(read_id_file(ids_file), ids_file)
        with progress(f"embed {model} (ray)") as bar:
            result = embed_store_ray(inputs, model, output, replace(options, progress=bar), encoding, ray)
    else:
        if ray.given():
            raise UsageError(f"{', '.join(ray.given())} {'needs' if len(ray.given()) == 1 else 'need'} --engine ray")
        device = device_name(encoding.device)  # a GPU that is not there: one line, before inputs are read
        inputs = read_inputs(list(source), **read)
        if ids_file:
            inputs = inputs.only(read_id_file(ids_file), ids_file)
        encoder = load_encoder(model, device=device, dtype=encoding.dtype, runtime=encoding.runtime)
        with progress(f"embed {model}") as bar:
            result = embed_store(inputs, encoder, output, replace(options, progress=bar))
    summary = result.as_dict()
    if result.samples == 0 and result.failed:
        # The store keeps the failed table for `stitch info`; the pipeline must stop here.
        raise StitchError(f"every input failed ({result.failed}): nothing was embedded; `stitch info "
                          f"{output}` lists each input and why (first: {_first_failure(output)})")
    if result.already_complete:
        text = f"{output} is already complete: {result.samples} samples, {result.failed} failed"
    else:
        rate = (result.samples + result.failed) / max(result.seconds, 1e-9)
        exported = f", ONNX export {result.export_seconds:.1f}s" if result.export_seconds is not None else ""
        text = (f"wrote {output}: {result.samples} samples x {result.dim} dims, {result.failed} failed, "
                f"{result.seconds:.1f}s ({rate:.1f}/s, {result.runtime} on {result.device}{exported})")
    emit(summary, as_json=as_json, text=text)


def _first_failure(output: str) -> str:
    from stitchkit.store import EmbeddingStore

    with EmbeddingStore(output) as store:
        failed = store.failed
    return f"{failed[0][0]}: {failed[0][1]}" if failed else "none recorded"

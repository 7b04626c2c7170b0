"""`stitch embed`: run an encoder over images or texts and write an HDF5 store."""

from __future__ import annotations

import click

from .devices import DEVICE_HELP, device_option
from .output import emit, progress, show_warnings


@click.command()
@click.argument("source", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("-m", "--model", "model", required=True, help="Short name (see `stitch models`) or backend:name?key=value spec.")
@click.option("-o", "--output", "output", required=True, type=click.Path(dir_okay=False, path_type=str), help="Store to write (.h5).")
@click.option("--batch-size", default=64, show_default=True, help="Samples per forward pass.")
@click.option("--workers", default=1, show_default=True, help="DataLoader worker processes decoding images.")
@device_option(DEVICE_HELP + " On a GPU the forward runs on torch (--runtime auto picks it: "
               "ONNX Runtime here is the CPU build); a GPU that is not there is refused, never replaced by the CPU.")
@click.option("--dtype", default="float32", show_default=True, type=click.Choice(["float32", "float16", "bfloat16"]))
@click.option("--runtime", default="auto", show_default=True, type=click.Choice(["auto", "torch", "onnx"]),
              help="What runs the forward pass: onnx = ONNX Runtime (timm image encoders such as lite0 "
                   "and lite2, on the CPU in float32; exported once into $STITCHKIT_CACHE/onnx); auto = "
                   "onnx where it can run, else torch.")
@click.option("--tokens", is_flag=True, help="Also keep patch / word tokens (N, T, D) with a mask.")
@click.option("--shard", default=None, help="Embed only shard i of N (i/N, split over sorted ids).")
@click.option("--strict", is_flag=True, help="Stop at the first unreadable input instead of recording it.")
@click.option("--overwrite", is_flag=True, help="Replace an existing store from another run (kept until the new one is complete).")
@click.option("--root", default=None, type=click.Path(file_okay=False, path_type=str), help="Resolve manifest paths here and refuse paths outside it.")
@click.option("--where", multiple=True, metavar="COL=VALUE", help="Keep manifest rows whose COL equals VALUE (repeatable).")
@click.option("--ids", "ids_file", default=None, type=click.Path(dir_okay=False), help="Embed only the inputs whose id this file lists (one per line, '#' comments): e.g. the anchors alone.")
@click.option("--id-column", default="id", show_default=True)
@click.option("--path-column", default="path", show_default=True)
@click.option("--text-column", default="text", show_default=True)
@click.option("--label-column", default="label", show_default=True)
@click.option("--group-column", default="group", show_default=True)
@click.option("--image-column", default="image", show_default=True, help="Hugging Face datasets: the image column (else the first datasets.Image column).")
@click.option("--label-from", default=None, metavar="cls|txt|json:FIELD", help="WebDataset shards: where the label comes from [cls when every sample has one].")
@click.option("--dicom-tags", default=None, metavar="TAGS|default", help="Copy DICOM tags into the store: 'default' = StudyInstanceUID (as group),ViewPosition,PatientID; patient names never.")
@click.option("--grey-range", default="image", show_default=True, type=click.Choice(["image", "stored"]),
              help="Grey levels of DICOM and 16-bit PNG/TIFF without a VOI LUT or window: image = each "
                   "image's own min..max -> 0..255 (as MIMIC-CXR-JPG was made); stored = the nominal "
                   "stored range, e.g. 0..4095 of a 12-bit DICOM through its rescale. The store's "
                   "pixel_mapping records which rule each file took.")
@click.option("--engine", default="local", show_default=True, type=click.Choice(["local", "ray"]), help="local: this process + DataLoader workers; ray: a Ray Data pipeline (pip install 'stitchkit[ray]').")
@click.option("--address", default=None, help="With --engine ray: join the Ray cluster at this address (else start a local Ray).")
@click.option("--ray-cpus", default=None, type=int, help="With --engine ray and no --address: CPUs of the local Ray [all].")
@click.option("--actors", default=None, type=int, help="With --engine ray: model replicas [one per GPU, else one per node].")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def embed(source: tuple[str, ...], model: str, output: str, batch_size: int, workers: int, device: str,
          dtype: str, runtime: str, tokens: bool, shard: str | None, strict: bool, overwrite: bool,
          root: str | None, where: tuple[str, ...], ids_file: str | None, id_column: str, path_column: str,
          text_column: str, label_column: str, group_column: str, image_column: str,
          label_from: str | None, dicom_tags: str | None, grey_range: str, engine: str,
          address: str | None, ray_cpus: int | None, actors: int | None, as_json: bool) -> None:
    """Embed SOURCE into a store: an image folder (DICOM too), a CSV/JSONL manifest, a .txt
    file, WebDataset .tar shards (a list or a brace pattern) or a local Hugging Face dataset
    (a save_to_disk folder or .parquet files).

    Re-running the same command after a crash or Ctrl-C continues where it stopped.

    \b
    Examples:
      stitch embed ../shared/data/kermany-pneumonia-224/labels.csv --where split=test -m lite0 --tokens -o k-test-lite0.h5
      stitch embed ../shared/data/kermany-pneumonia-224/train -m lite2 -o k-train-lite2.h5 --tokens
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
    cols = Columns(id_column, path_column, text_column, label_column, group_column, image_column)
    read = {"columns": cols, "root": root, "where": filters, "label_from": label_from, "dicom_tags": dicom_tags,
            "grey_range": grey_range}
    shard_spec = parse_shard(shard)
    parse_spec(model)  # a misspelled spec option is refused before any input is listed
    if engine == "ray":
        if device.startswith("cuda:"):
            raise UsageError(f"--device {device} names a GPU of this machine; with --engine ray use "
                             "--device cuda (Ray gives each actor a GPU of the cluster)")
        if runtime != "auto":
            raise UsageError("--runtime needs --engine local (Ray actors pick their runtime as auto does)")
        if grey_range != "image":
            raise UsageError("--grey-range stored needs --engine local (Ray decodes by the image range)")
        from stitchkit.engines.ray_engine import embed_store_ray, require_ray

        require_ray()  # say a missing extra before reading inputs or loading a model
        inputs = read_inputs(list(source), **read)  # the engine refuses formats it cannot read
        if ids_file:
            inputs = inputs.only(read_id_file(ids_file), ids_file)
        with progress(f"embed {model} (ray)") as bar:
            result = embed_store_ray(
                inputs, model, output, batch_size=batch_size, tokens=tokens, strict=strict,
                shard=shard_spec, overwrite=overwrite, address=address, num_cpus=ray_cpus,
                actors=actors, device=device, dtype=dtype, progress=bar,
            )
    else:
        ray_only = [name for name, v in (("--address", address), ("--ray-cpus", ray_cpus),
                                         ("--actors", actors)) if v is not None]
        if ray_only:
            raise UsageError(f"{', '.join(ray_only)} {'needs' if len(ray_only) == 1 else 'need'} --engine ray")
        device = device_name(device)  # a GPU that is not there: one line, before inputs are read
        inputs = read_inputs(list(source), **read)
        if ids_file:
            inputs = inputs.only(read_id_file(ids_file), ids_file)
        encoder = load_encoder(model, device=device, dtype=dtype, runtime=runtime)
        with progress(f"embed {model}") as bar:
            result = embed_store(
                inputs, encoder, output, batch_size=batch_size, workers=workers, tokens=tokens,
                strict=strict, shard=shard_spec, overwrite=overwrite, progress=bar,
            )
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

"""`stitch benchmark`: a suite of zero-shot data sets scored through one composition, as a table."""

from __future__ import annotations

from typing import Any

import click

from stitchkit.zeroshot.benchmark import BenchmarkOptions, Route
from stitchkit.zeroshot.patches import PatchOptions

from .output import emit, show_warnings
from .settings import settings_options, take_settings


def _named(values: tuple[str, ...], option: str, what: str) -> dict[str, str]:
    """``NAME=FILE`` options as a dict, one line for a malformed or repeated name."""
    from stitchkit.errors import UsageError

    named: dict[str, str] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise UsageError(f"{option} {value!r}: use NAME={what} (NAME as the suite's `store:` names it)")
        if name.strip() in named:
            raise UsageError(f"{option} {name.strip()} is given twice: give each store name once")
        named[name.strip()] = path.strip()
    return named


@click.command()
@click.argument("suite")
@click.option("--store", "stores", multiple=True, metavar="NAME=STORE.h5",
              help="The store a suite's data sets read as NAME (repeatable; every store the suite's "
                   "chosen data sets name is needed).")
@click.option("-t", "--text-model", default=None,
              help="Text model that embeds the prompts (e.g. minilm). Default with --head: the text "
                   "model the head was trained with.")
@click.option("--prompt-store", type=click.Path(dir_okay=False), default=None,
              help="Read prompt embeddings from this store (written there if missing and --text-model is given).")
@click.option("--map", "map_path", type=click.Path(dir_okay=False), default=None,
              help="Map from the stores' space into the head's image space (or the text space for cosine).")
@click.option("--adapt", "adapt_maps", multiple=True, metavar="NAME=DOMAIN.map",
              help="Adaptation map (`stitch adapt`) of store NAME's domain, applied to its queries where the "
                   "scorer reads (repeatable, one per store).")
@click.option("--head", "head_paths", type=click.Path(dir_okay=False), multiple=True,
              help="Cross-attention head file; repeat it for an ensemble (mean of the heads' logits).")
@settings_options(Route)
@settings_options(PatchOptions)
@click.option("--dataset", "datasets", multiple=True,
              help="Run only this data set of the suite (repeatable)  [default: every data set]")
@click.option("-o", "--output", "out", required=True, type=click.Path(file_okay=False),
              help="Folder for benchmark.json, table.md, records.json and scores/.")
@settings_options(BenchmarkOptions)
@click.option("--control", type=click.Path(file_okay=False, exists=True), default=None,
              help="Folder of a `stitch benchmark` run of the control route (the reference through the same "
                   "anchors and adaptation) over the same data sets: adds its macro AUC and the paired difference.")
@click.option("--json", "as_json", is_flag=True, help="Print benchmark.json's content instead of the table.")
def benchmark(suite: str, stores: tuple[str, ...], text_model: str | None, prompt_store: str | None,
              map_path: str | None, adapt_maps: tuple[str, ...],
              head_paths: tuple[str, ...], datasets: tuple[str, ...], out: str, control: str | None,
              as_json: bool, **settings: Any) -> None:
    """Score every data set of SUITE and write the table zero-shot papers print.

    SUITE is a YAML file or a shipped suite's short name: papers (ChestX-ray14, CheXpert,
    PadChest head/medium/tail, RSNA, SIIM, Open-I, VinDr-CXR) or demo (Kermany test, NIH by
    patient). Each data set names a store (--store NAME=FILE), rows, prompts and findings
    (docs/benchmark.md). Per data set: AUC per finding and macro with bootstrap 95 %
    intervals (images resampled, the same resamples for every finding), accuracy for
    multi-class sets. Writes OUTDIR/table.md, benchmark.json, records.json (read by
    `stitch results`, appended run after run) and each data set's scores in OUTDIR/scores/.

    \b
    Examples:
      stitch benchmark demo --store kermany=k-test-lite2.h5 --dataset kermany --head head.st -o bench
      stitch benchmark demo --store kermany=lite0-test.h5 --dataset kermany --map lite0-to-minilm.map --scoring cosine -t minilm -o bench
      stitch benchmark demo --store kermany=k-test-lite0-tok.h5 --dataset kermany --map lite0-to-minilm.map --scoring patch -t minilm -o bench-patch
      stitch benchmark papers --store nih=nih-test-lite0.h5 --store chexpert=chexpert-lite0.h5 --dataset chestxray14 --dataset chexpert --map lite0-to-lite2.map --head head.st -o papers
      stitch benchmark demo --store kermany=k-test-lite2.h5 --dataset kermany --adapt kermany=kermany.adapt.map --head head.st -o bench-adapted
      stitch benchmark demo --store kermany=lite0-test.h5 --dataset kermany --map lite0-to-lite2.map --adapt kermany=kermany.adapt.map --head head.st --control bench-adapted -o bench-stitched
      stitch results bench/records.json --columns dataset,model,auc_macro,auc_macro_ci_low,auc_macro_ci_high,n
      stitch report bench
    """
    show_warnings()
    from stitchkit.zeroshot.benchmark import load_suite, run_suite

    from .output import _command

    loaded = load_suite(suite)
    head = None if not head_paths else head_paths[0] if len(head_paths) == 1 else list(head_paths)
    route = take_settings(Route, settings, text_model=text_model, map_path=map_path, head_path=head,
                          prompt_store=prompt_store, adapt=_named(adapt_maps, "--adapt", "DOMAIN.map"),
                          patch=take_settings(PatchOptions, settings))

    def on_entry(name: str, i: int, n: int) -> None:
        click.echo(f"benchmark: {name} ({i + 1}/{n})", err=True)

    options = take_settings(BenchmarkOptions, settings, datasets=list(datasets), command=_command(),
                            on_entry=on_entry, control=control)
    data = run_suite(loaded, _named(stores, "--store", "STORE.h5"), route, out, options)
    text = "\n".join([data["markdown"].rstrip(), "", f"written: {data['table']}, {out}/benchmark.json, "
                      f"{data['records']} ({len(data['datasets'])} data sets)"])
    emit(data, as_json=as_json, text=text)

"""`stitch head train` and `stitch head captions`: the text side and the cross-attention head."""

from __future__ import annotations

from typing import Any

import click

from stitchkit.head.config import ComputeOptions, HeadConfig, TrainConfig

from .devices import DEVICE_PARSING
from .output import emit, progress, show_warnings
from .settings import settings_options, take_settings
from .vocabulary import deprecated_alias, take_alias

SETTINGS = {"show_default": True}


@click.group()
def head() -> None:
    """Train cross-attention heads (CARZero-style) on paired image and text stores.

    \b
    Examples:
      stitch head captions k-lite2.h5 --from-texts -t minilm -o notes-minilm.h5
      stitch head train k-lite2.h5 notes-minilm.h5 -o head.st --seed 0
    """


@head.command()
@click.argument("images", type=click.Path(dir_okay=False))
@click.argument("texts", type=click.Path(dir_okay=False))
@click.option("-o", "--output", "out", required=True, type=click.Path(dir_okay=False),
              help="Head file to write (safetensors + JSON metadata).")
@settings_options(HeadConfig)
@settings_options(TrainConfig)
@settings_options(ComputeOptions, extra={"device": DEVICE_PARSING})
@click.option("--pairs", "more_pairs", nargs=2, multiple=True, type=click.Path(dir_okay=False),
              help="Another IMAGES TEXTS pair of stores (same models) to train on, in equal shares; repeatable.")
@click.option("--ids", "ids_file", type=click.Path(exists=True, dir_okay=False),
              help="Train only on these ids (a text file, one id per line).")
@click.option("--no-plot", is_flag=True, help="Do not draw the loss curve PNG.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def train(images: str, texts: str, out: str, more_pairs: tuple[tuple[str, str], ...], ids_file: str | None,
          no_plot: bool, as_json: bool, **settings: Any) -> None:
    """Train a head on the image–text pairs IMAGES and TEXTS share (joined by id).

    Contrastive (InfoNCE) loss on each direction, AdamW with warm-up and cosine decay over a
    budget of steps, the head kept the best of a few checkpoints (and of its start) on a
    validation split by patient. By default the head starts as the cosine route of its pairs
    (--residual). A sentence store (captions --sentences) gives one sentence per image per
    step. Batches are read from the stores in a background thread while
    the head computes (memory does not grow with the pairs). An interrupted run resumes from
    HEAD.ckpt to the head an uninterrupted run gives; the loss curve is written to
    HEAD.loss.png. The head file names the image and text spaces it was trained in, and the
    device and precision it was trained with.

    \b
    Examples:
      stitch head train k-train-lite2.h5 k-train-captions-minilm.h5 -o head.st
      stitch head train covid-lite2.h5 covid-notes-minilm.h5 -o notes-head.st --seed 1
      stitch head train covid-lite2.h5 covid-sentences-minilm.h5 --pairs nih-lite2.h5 nih-sentences-minilm.h5 -o mixed.st
      stitch head train k-train-lite2.h5 k-train-captions-minilm.h5 -o head-gpu.st --device cuda --precision bf16
    """
    show_warnings()
    from stitchkit.fileio import read_id_file
    from stitchkit.head import train_head

    config = take_settings(TrainConfig, settings, head=take_settings(HeadConfig, settings))
    ids = read_id_file(ids_file) if ids_file else None
    with progress("head train") as bar:
        run = take_settings(ComputeOptions, settings, progress=bar.update)
        result = train_head(images, texts, out=out, config=config, run=run, ids=ids, more_pairs=list(more_pairs))
    if not no_plot:
        from stitchkit.report.loss_plot import plot_loss

        result.plot = plot_loss(result.history, f"{out}.loss.png")
    data = result.to_dict()
    if as_json:
        emit(data, as_json=True)
        return
    val = result.val
    lines = [
        f"head: {result.path}",
        f"pairs: {result.n_pairs} ({result.n_train} train, {result.n_val} validation)",
        f"epochs: {result.epochs_run} (kept: {'the start' if result.best_epoch == 0 else f'epoch {result.best_epoch}'}"
        + (", stopped early" if result.stopped_early else "")
        + (f", resumed after epoch {result.resumed_from}" if result.resumed_from else "") + ")",
    ]
    if val:
        lines.append(
            f"validation: loss {val['val_loss']:.4f}, top-1 image→text {val['i2t_top1']:.3f}, "
            f"text→image {val['t2i_top1']:.3f} (chance {val['chance_top1']:.3f}, n {val['n']})"
        )
    if result.plot:
        lines.append(f"loss curve: {result.plot}")
    lines.append(f"time: {result.seconds:.1f} s on {result.device} ({result.precision})")
    emit(data, as_json=False, text="\n".join(lines))


@head.command()
@click.argument("images", type=click.Path(dir_okay=False))
@click.option("-t", "--text-model", callback=take_alias, help="Text model that embeds the captions (e.g. minilm); required.")
@deprecated_alias("-m", "-t/--text-model", "text_model")
@click.option("-o", "--output", "out", required=True, type=click.Path(dir_okay=False),
              help="Text store to write (.h5), with the image store's ids.")
@click.option("--from-labels", "prompt_file", default=None,
              help="Caption each image by its label through this prompt file (label-derived: not zero-shot).")
@click.option("--from-findings", "findings_file", default=None,
              help="A sentence per finding of each image's labels (\"A|B\", NIH's finding labels) through "
                   "this prompt file; \"No Finding\": the normal-chest sentence. Label-derived.")
@click.option("--from-texts", is_flag=True,
              help="Caption each image by its own text (report, notes), standardised.")
@click.option("--sentences", is_flag=True,
              help="One row per sentence (ids ID#k, the image id in column 'image'): head training "
                   "draws one sentence per image per step, the form prompts have.")
@click.option("--raw", is_flag=True, help="With --from-texts: keep the text as written, do not standardise.")
@click.option("--standardiser-cmd", default=None,
              help="External standardiser (an LLM wrapper): reads one report on stdin, writes sentences on stdout.")
@click.option("--tokens", is_flag=True, help="Also keep word tokens (for heads that use them).")
@click.option("--ids", "ids_file", type=click.Path(exists=True, dir_okay=False),
              help="Caption only these images (a text file, one id per line; e.g. the training patients').")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def captions(images: str, text_model: str, out: str, prompt_file: str | None, findings_file: str | None,
             from_texts: bool, sentences: bool, raw: bool, standardiser_cmd: str | None, tokens: bool,
             ids_file: str | None, as_json: bool) -> None:
    """Write the text side for head training: a text store with the ids of IMAGES.

    --from-texts uses the image store's own texts (embed the images with --text-column naming
    the notes or report column), rewritten by the rule-based, negation-aware standardiser into
    "There is X." / "There is no X." sentences, or by --standardiser-cmd.
    --from-labels writes label-derived captions; results built on those are not zero-shot.
    --from-findings writes a sentence per finding of each image's (multi-)label, e.g. NIH's
    finding labels: a head trained on them has seen those findings, not another set's labels.

    \b
    Examples:
      stitch head captions covid-lite2.h5 --from-texts -t minilm -o covid-notes-minilm.h5
      stitch head captions k-lite2.h5 --from-labels pneumonia -t minilm -o k-captions.h5
      stitch head captions covid-lite2.h5 --from-texts --sentences -t minilm -o covid-sentences-minilm.h5
      stitch head captions nih-lite2.h5 --from-findings cxr-findings --sentences --ids nih-train-ids.txt -t minilm -o nih-sentences-minilm.h5
      stitch head captions covid-lite2.h5 --from-texts --standardiser-cmd "./my-llm --rewrite" -t minilm -o c.h5
    """
    show_warnings()
    from stitchkit.errors import UsageError
    from stitchkit.fileio import read_id_file
    from stitchkit.zeroshot.captions import CaptionSource, make_captions
    from stitchkit.zeroshot.prompts import load_prompts
    from stitchkit.zeroshot.standardise import CommandStandardiser

    if not text_model:
        raise UsageError("Missing option '-t' / '--text-model': the text model that embeds the captions (e.g. minilm)")
    if sum(map(bool, (prompt_file, findings_file, from_texts))) != 1:
        raise UsageError("give exactly one of --from-labels PROMPTS, --from-findings PROMPTS or --from-texts")
    std = CommandStandardiser(standardiser_cmd) if standardiser_cmd else None
    source = CaptionSource(prompts=load_prompts(prompt_file) if prompt_file else None,
                           findings=load_prompts(findings_file) if findings_file else None,
                           standardiser=std, raw=raw)
    result = make_captions(images, out=out, text_model=text_model, source=source, tokens=tokens,
                           sentences=sentences, ids=read_id_file(ids_file) if ids_file else None)
    text = "\n".join([
        f"captions: {result.path}",
        f"origin: {result.origin}",
        f"samples: {result.n} captioned, {result.skipped} without a caption; {result.rows} rows, "
        f"{result.distinct} distinct",
        *(f"  {i}: {c}" for i, c in result.examples),
    ])
    emit(result.to_dict(), as_json=as_json, text=None if as_json else text)

"""`stitch classify`: zero-shot classification of a store through prompts."""

from __future__ import annotations

from typing import Any

import click

from stitchkit.zeroshot.classify_plan import ClassifyOptions
from stitchkit.zeroshot.patches import PatchOptions

from .devices import DEVICE_PARSING
from .output import emit_record, name_option, progress, show_warnings
from .settings import settings_options, take_settings
from .vocabulary import deprecated_alias, take_alias


@click.command()
@click.argument("query", type=click.Path(dir_okay=False))
@click.option("--prompts", "prompt_file", default=None,
              help="Prompt file (YAML/JSON) or a curated set's short name (pneumonia, cxr14).")
@click.option("--classes", default=None, help="Comma-separated class names instead of a prompt file.")
@click.option("--template", "templates", multiple=True,
              help='Positive template with {finding} (repeatable). Default "There is {finding}."')
@click.option("--negative-template", "negative_templates", multiple=True,
              help='Negative template (multilabel). Default "There is no {finding}."')
@click.option("--mode", type=click.Choice(["multiclass", "multilabel"]), default=None,
              help="Softmax over classes, or each finding's positive against its negative prompt "
                   "(default: the prompt file's mode, else multiclass).")
@click.option("-t", "--text-model", default=None,
              help="Text model that embeds the prompts (e.g. minilm); cached. Default with --head: the "
                   "text model the head was trained with.")
@click.option("--prompt-store", type=click.Path(dir_okay=False), default=None,
              help="Read prompt embeddings from this store (written there if missing and --text-model is given).")
@click.option("--map", "map_path", type=click.Path(dir_okay=False), default=None,
              help="Map from the query's space into the head's image space (or the text space for cosine).")
@click.option("--adapt", "adapt_path", type=click.Path(dir_okay=False), default=None,
              help="Adaptation map (from `stitch adapt`) of the target domain, applied to the queries in the space "
                   "the head or the cosine map reads: after --map into the head's space, before --map into a text space.")
@click.option("--head", "head_paths", type=click.Path(dir_okay=False), multiple=True,
              help="Cross-attention head file (from `stitch head train`). Repeat it for an ensemble "
                   "(e.g. seeds): class logits are the mean of the heads' logits.")
@click.option("--ids", "ids_file", type=click.Path(exists=True, dir_okay=False),
              help="Classify only these ids (a text file, one id per line), e.g. a test split.")
@settings_options(ClassifyOptions, short={"output": "-o"},
                  extra={"force_space": {"callback": take_alias}, "device": DEVICE_PARSING})
@settings_options(PatchOptions)
@deprecated_alias("--force", "--force-space", "force_space", is_flag=True)
@name_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def classify(query: str, prompt_file: str | None, classes: str | None, templates: tuple[str, ...],
             negative_templates: tuple[str, ...], mode: str | None, text_model: str | None,
             prompt_store: str | None, map_path: str | None, adapt_path: str | None,
             head_paths: tuple[str, ...], ids_file: str | None, name: str | None, as_json: bool,
             **settings: Any) -> None:
    """Classify every sample of QUERY zero-shot: (map →) head or cosine → prompts.

    Where QUERY has labels, prints AUC per class and macro, accuracy and F1 with bootstrap
    95 % intervals (multi-class: prediction = most probable class, after the EM prior
    adjustment with --prior em; multi-label: a finding is present when its positive prompt
    beats its negative, p ≥ 0.5). The scores file holds each class's probability and, as
    score:<class>, the log-odds that metrics rank by (they never round to 0 or 1).

    \b
    Examples:
      stitch classify k-test-lite2.h5 --prompts pneumonia --text-model minilm --head head.st -o scores.csv
      stitch classify k-test-lite0.h5 --map lite0-to-lite2.map --head head.st --prompts pneumonia --text-model minilm --name stitched
      stitch classify k-test-lite2.h5 --adapt kermany.adapt.map --head head.st --prompts pneumonia --prior mixture
      stitch classify k-test-lite0.h5 --map lite0-to-minilm.map --scoring cosine --classes normal,pneumonia --text-model minilm
      stitch classify k-test-lite0-tok.h5 --map lite0-to-minilm.map --scoring patch --prompts pneumonia --text-model minilm
      stitch classify k-test-lite2-tok.h5 --prompts pneumonia --text-model minilm --head token-head.st --prior em
      stitch classify k-test-lite2-tok.h5 --prompts pneumonia --text-model minilm --head s0.head --head s1.head --head s2.head
      stitch classify nih-lite2.h5 --prompts cxr14 --mode multilabel --text-model minilm --head head.st -o s.h5 --json --allow-missing-classes
    """
    show_warnings()
    from stitchkit.errors import UsageError
    from stitchkit.fileio import read_id_file
    from stitchkit.zeroshot.prompts import from_classes, load_prompts
    from stitchkit.zeroshot.scoring import classify as run_classification

    if bool(prompt_file) == bool(classes):
        raise UsageError("give exactly one of --prompts FILE or --classes a,b,c")
    if prompt_file:
        prompts = load_prompts(prompt_file, mode=mode)
    else:
        prompts = from_classes(classes.split(","), templates=list(templates) or None,
                               negative_templates=list(negative_templates) or None,
                               mode=mode or "multiclass")
    head_path = None if not head_paths else head_paths[0] if len(head_paths) == 1 else list(head_paths)
    ids = read_id_file(ids_file) if ids_file else None
    with progress("classify") as bar:
        patch = take_settings(PatchOptions, settings)
        options = take_settings(ClassifyOptions, settings, text_model=text_model, prompt_store=prompt_store,
                                map_path=map_path, adapt_path=adapt_path, head_path=head_path, ids=ids,
                                progress=bar.update, patch=patch)
        result = run_classification(query, prompts, options)
    emit_record("classify", result.to_dict(), as_json=as_json, text=None if as_json else format_result(result))


def _over(ci: dict) -> str:
    """What the interval resampled: whole groups (patients), or images."""
    if ci.get("unit") == "group":
        return f" over {ci['n_groups']:,} groups (whole groups resampled)"
    return " over images" if ci.get("unit") == "image" else ""


def format_result(result) -> str:  # noqa: ANN001 - ClassifyResult, imported lazily
    comp = result.composition
    route = [comp["query"].get("model_spec") or comp["query"]["path"]]
    if "adapt" in comp and comp["adapt"]["applied"] != "after the map":
        route.append(f"adapted ({comp['adapt']['images']} images)")
    if "map" in comp:
        route.append(f"map → {comp['map']['target'].get('model_spec')}")
    if "adapt" in comp and comp["adapt"]["applied"] == "after the map":
        route.append(f"adapted ({comp['adapt']['images']} images)")
    route.append(f"head {comp['head']['path']}" if "head" in comp else
                 f"patch ({comp['patch']['pooling']}, {comp['patch']['tokens']} tokens)" if "patch" in comp else "cosine")
    route.append(f"prompts ({comp['prompts'].get('model_spec')})")
    lines = [
        f"classified: {result.n} samples, {len(result.classes)} classes, {result.mode}, "
        f"{result.seconds:.1f} s including set-up" + (f", on {result.device}" if result.device != "cpu" else ""),
        "route: " + " → ".join(route),
    ]
    if result.output:
        lines.append(f"scores: {result.output}")
    m = result.metrics
    if m:
        ci = m.get("ci", {})

        def fmt(value: float, interval: list[float] | None) -> str:
            return f"{value:.3f}" + (f" [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else "")

        lines.append(f"metrics (n={m['n']}, threshold: {m['threshold']}"
                     + (f", {int(100 * ci['level'])} % bootstrap CI{_over(ci)}" if ci else "") + "):")
        for c in result.classes:
            lines.append(f"  AUC {c}: {fmt(m['auc'][c], ci.get('auc', {}).get(c))}"
                         f"  (positives {m['positives'][c]}, F1 {m['f1'][c]:.3f})")
        lines.append(f"  AUC macro: {fmt(m['auc_macro'], ci.get('auc_macro'))}")
        lines.append(f"  accuracy: {fmt(m['accuracy'], ci.get('accuracy'))}")
        lines.append(f"  F1 macro: {fmt(m['f1_macro'], ci.get('f1_macro'))}")
    lines.extend(f"note: {n}" for n in result.notes)
    return "\n".join(lines)

"""`stitch datasets`: the chest X-ray datasets that specs read as published, their options and
finding names; `stitch datasets SPEC` indexes a folder and counts what it would embed."""

from __future__ import annotations

from typing import Any

import click

from stitchkit.errors import UsageError

from .output import emit


def _listing(cards: list[dict[str, Any]]) -> str:
    wide = max(len(c["title"]) for c in cards)
    lines = [f"{'name':9} {'title':{wide}} {'findings':>8}  {'splits':22} texts  options"]
    for c in cards:
        lines.append(f"{c['name']:9} {c['title']:{wide}} {len(c['findings']):>8}  "
                     f"{'/'.join(c['splits']) or 'none':22} {'yes' if c['texts'] else 'no':5}  "
                     f"{', '.join(c['options'])}")
    lines += ["", "Official splits (a spec's split column, and split= to keep one):"]
    lines += [f"  {c['name']:9} {c['split_from'] or 'none published'}" for c in cards]
    lines += ["  Where a dataset has none, or the folder lacks its files (`splits none` under `stitch datasets SPEC`),",
              "  hold out patients yourself: an id file for --ids or a benchmark suite's ids: (docs/datasets.md)."]
    lines += ["", "A spec reads a folder as published: stitch embed nih:/data/nih -m lite2 -o nih.h5",
              "Options go after '?': chexpert:/data/CheXpert-v1.0-small?split=valid&uncertain=positive",
              "stitch datasets NAME shows a dataset's options and term table; --findings the finding names."]
    return "\n".join(lines)


def _card(c: dict[str, Any]) -> str:
    lines = [f"{c['title']} ({c['name']}): {c['citation']}", f"layout   {c['layout']}", f"spec     {c['spec']}",
             f"splits   {c['split_note']}", "options"]
    for name, o in c["options"].items():
        values = "|".join(o["values"]) if o["values"] else "PATH"
        lines.append(f"  {name}={values}  (default {o['default']}): {o['meaning']}")
    lines.append("terms -> findings (torchxrayvision's names)")
    for finding, terms in c["terms"].items():
        extra = "  [not in torchxrayvision's default set]" if finding in c["extra_findings"] else ""
        lines.append(f"  {finding:28} <- {', '.join(terms)}{extra}")
    return "\n".join(lines)


def _findings(cards: list[dict[str, Any]], names: list[str]) -> str:
    every = names + sorted({f for c in cards for f in c["findings"]} - set(names))
    head = f"{'finding':28} " + " ".join(f"{c['name'][:8]:>8}" for c in cards)
    rows = [f"{f:28} " + " ".join(f"{'x' if f in c['findings'] else '.':>8}" for c in cards) for f in every]
    return "\n".join([head, *rows])


def _summary(s: dict[str, Any]) -> str:
    def counts(d: dict[str, int]) -> str:
        return ", ".join(f"{k} {v:,}" for k, v in d.items()) or "none"

    return "\n".join([
        f"{s['source']}: {s['rows']:,} {s['modality']}s, {s['patients']:,} patients, {s['studies']:,} studies",
        f"views      {counts(s['views'])}", f"splits     {counts(s['splits'])}",
        *([f"           {s['split_note']}"] if s.get("split_note") else []),
        f"with text  {s['with_text']:,}", f"findings   {counts(s['findings'])}",
        f"uncertain  {counts(s['uncertain'])}"])


@click.command()
@click.argument("name_or_spec", required=False)
@click.option("--findings", "show_findings", is_flag=True, help="Show which dataset labels which finding.")
@click.option("-o", "--output", "out", type=click.Path(dir_okay=False), default=None,
              help="With a spec: write what it reads as a CSV manifest (id, path, label, group, view, "
                   "study, split, uncertain; text where the dataset has reports).")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def datasets(name_or_spec: str | None, show_findings: bool, out: str | None, as_json: bool) -> None:
    """List the chest X-ray datasets read as published (NAME:FOLDER specs), one dataset's
    options and term table (NAME), or what a folder holds (NAME:FOLDER?OPTIONS: images,
    patients, views, splits, findings; nothing is embedded).

    Findings carry torchxrayvision's names (default_pathologies); each dataset's terms are
    mapped onto them, and the prompt set cxr-findings scores them.

    \b
    Examples:
      stitch datasets
      stitch datasets --findings
      stitch datasets chexpert
      stitch datasets "nih:/data/nih?split=test&views=pa"
      stitch datasets "nih:/data/nih?views=all" -o nih.csv
    """
    from stitchkit.inputs.cxr import dataset, dataset_card
    from stitchkit.inputs.cxr import datasets as all_datasets
    from stitchkit.inputs.cxr.findings import FINDINGS

    if name_or_spec and ":" in name_or_spec:
        from stitchkit.inputs import read_inputs
        from stitchkit.inputs.cxr import summarise

        inputs = read_inputs(name_or_spec)
        summary = summarise(inputs)
        text = _summary(summary)
        if out:
            from stitchkit.datasets import write_csv
            from stitchkit.inputs.cxr import manifest_rows

            summary["manifest"] = str(write_csv(manifest_rows(inputs), out))
            text += f"\nmanifest   {out}"
        emit(summary, as_json=as_json, text=text)
        return
    if out:
        raise UsageError("-o/--output writes what a spec reads: give NAME:FOLDER, not a dataset name")
    if name_or_spec:
        card = dataset_card(dataset(name_or_spec))
        emit(card, as_json=as_json, text=_card(card))
        return
    cards = [dataset_card(d) for d in all_datasets()]
    text = _findings(cards, list(FINDINGS)) if show_findings else _listing(cards)
    emit({"datasets": cards, "findings": list(FINDINGS)}, as_json=as_json, text=text)

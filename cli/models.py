"""`stitch models`: the short names and whether their weights are installed."""

from __future__ import annotations

import click

from .output import emit


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def models(as_json: bool) -> None:
    """List short model names: modality, dimension, and whether the weights are installed.

    Any other model is named by a spec: timm:NAME?weights=FILE, hf:DIR?pooling=mean,
    st:DIR, open_clip:NAME?weights=FILE&tower=image.

    \b
    Examples:
      stitch models
      stitch models --json
    """
    from stitchkit.encoders import list_models

    rows = list_models()
    lines = [f"{'name':8} {'modality':8} {'dim':>5}  {'installed':9}  description"]
    for r in rows:
        mark = "yes" if r["installed"] else f"no ({r['package']})"
        lines.append(f"{r['name']:8} {r['modality']:8} {r['dim']:>5}  {mark:9}  {r['description']}")
    emit({"models": rows}, as_json=as_json, text="\n".join(lines))

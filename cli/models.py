"""`stitch models`: the short names and whether their weights are installed."""

from __future__ import annotations

import click

from .output import emit


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def models(as_json: bool) -> None:
    """List short model names (modality, dimension, weights installed?) and the backends.

    Any other model is named by a spec: timm:NAME?weights=FILE, hf:DIR (image or text, by its
    config; ?tower=image|text for CLIP/SigLIP), st:DIR, open_clip:NAME?weights=FILE&tower=image,
    torchvision:NAME?weights=FILE.

    \b
    Examples:
      stitch models
      stitch models --json
    """
    from stitchkit.encoders import list_models
    from stitchkit.encoders.registry import list_backends

    rows = list_models()
    lines = [f"{'name':8} {'modality':8} {'dim':>5}  {'installed':9}  description"]
    for r in rows:
        mark = "yes" if r["installed"] else f"no ({r['package']})"
        lines.append(f"{r['name']:8} {r['modality']:8} {r['dim']:>5}  {mark:9}  {r['description']}")
    backends = list_backends()
    lines += ["", "backends (one example spec each):"]
    lines += [f"  {b['backend']:11} {b['example']}" for b in backends]
    emit({"models": rows, "backends": backends}, as_json=as_json, text="\n".join(lines))

"""`stitch models`: the short names and whether their weights are installed; `--check SPEC`
loads one spec and says what it resolved to."""

from __future__ import annotations

from typing import Any

import click

from stitchkit.embed_options import EncoderOptions

from .devices import DEVICE_PARSING
from .output import emit, show_warnings
from .settings import settings_options


def _numbers(values: Any) -> str:
    return " ".join(f"{v:g}" for v in values) if isinstance(values, (list, tuple)) else str(values)


def _match_line(match: dict[str, Any] | None) -> str:
    if not match:
        return "the backend's own loader (by name)"
    how = match.get("how", "?")
    if "matched" not in match:
        return str(how)
    counts = f"{match['matched']} of the model's {match['model_tensors']} tensors, {match['file_tensors']} in the file"
    if how == "position":
        line = f"by position: {counts} (names differ, e.g. {match.get('example', '')}; every shape agrees)"
    else:
        line = f"by {how}: {counts}"
    if match.get("prefix"):
        line += f", key prefix {match['prefix']!r} removed"
    return line


def check_text(r: dict[str, Any]) -> str:
    """The `--check` report as aligned lines."""
    p = r["preprocessing"]
    short = " (short name)" if r["short_name"] else ""
    rows = [("spec", f"{r['spec']}{short}"),
            ("model", f"{r['backend']}:{r['name']}  {r['modality']}, {r['dim']}-d"),
            ("options", " ".join(f"{k}={v}" for k, v in r["options"].items()) or "none")]
    for path in r["weights"]:
        rows.append(("weights", path))
    rows.append(("weights sha256", r["weights_sha256"] or "none (hub or built-in weights)"))
    rows.append(("key matching", _match_line(r["weights_match"])))
    if r.get("order_check"):
        rows.append(("tensor order", r["order_check"]["note"]))
    if p:
        res = p.get("resolution")
        rows.append(("resolution", f"{res[0]} x {res[1]} {p.get('mode', '')}".strip() if res else "?"))
        if "crop_pct" in p:
            crop = p["crop_pct"]
            rows.append(("crop_pct", f"{crop:g}" + (" (whole image, no crop)" if crop == 1 else
                                                   f" (centre {crop:.1%} of the resized image)")))
        if "interpolation" in p:
            rows.append(("interpolation", p["interpolation"]))
        if "mean" in p:
            rows.append(("mean / std", f"{_numbers(p['mean'])} / {_numbers(p.get('std', '?'))}"))
        if "scale" in p:
            rows.append(("scaling", p["scale"]))
    if r["batchnorm_eps"]:
        eps = ", ".join(f"{e} ({n} layers)" for e, n in r["batchnorm_eps"].items())
        rows.append(("BatchNorm eps", eps))
    elif r["modality"] == "image":
        rows.append(("BatchNorm eps", "no BatchNorm layers"))
    if r["modality"] == "text":
        rows.append(("preprocessing", " ".join(f"{k}={v}" for k, v in r["preprocessing_full"].items())))
    width = max(len(k) for k, _ in rows)
    lines = [f"{k:{width}}  {v}" for k, v in rows]
    if r["imagenet_top5"] is not None:
        photo = r["test_photo"]
        lines.append(f"ImageNet top-5 of {photo['name']}, {photo['subject']} ({photo['source']}; "
                     f"weights that loaded right give {photo['expected']}):")
        lines += [f"  {t['p']:.3f}  {t['label']} ({t['class']})" for t in r["imagenet_top5"]]
    elif r["modality"] == "image":
        lines.append("ImageNet top-5: not available (the checkpoint has no 1000-class ImageNet classifier)")
    space = r["space"]
    opts = " ".join(f"{k}={v}" for k, v in space.get("options", {}).items())
    lines.append(f"{'space':{width}}  {space.get('backend', '')}:{space.get('name', '(any path)')} "
                 f"{opts or '(no options)'} weights {str(space.get('weights_sha256') or 'unhashed')[:12]}")
    return "\n".join(lines)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@click.option("--check", "check", metavar="SPEC", default=None,
              help="Load SPEC and report what it resolved: resolution, crop, interpolation, mean/std, "
                   "BatchNorm eps, how the weights' keys were matched, and the ImageNet top-5 of a "
                   "bundled photo when the checkpoint has an ImageNet head.")
@settings_options(EncoderOptions, only=("device",), extra={"device": DEVICE_PARSING})
def models(as_json: bool, check: str | None, device: str) -> None:
    """List short model names (modality, dimension, weights installed?) and the backends.

    Any other model is named by a spec: timm:NAME?weights=FILE, hf:DIR (image or text, by its
    config; ?tower=image|text for CLIP/SigLIP), st:DIR, open_clip:NAME?weights=FILE&tower=image,
    torchvision:NAME?weights=FILE. Every option is explained in docs/encoders.md; an unknown
    option or a value of the wrong type is refused (exit 2).

    --check SPEC loads the model and shows what the spec resolved to, so a checkpoint can be
    verified before embedding with it: weights trained elsewhere need the preprocessing and
    BatchNorm eps they were trained with, and ImageNet weights should name the bundled photo
    (a temple) "palace".

    \b
    Examples:
      stitch models
      stitch models --json
      stitch models --check lite0
      stitch models --check "timm:efficientnet_lite0?weights=/models/lite0.pth&bn_eps=0.001&crop_pct=1.0"
    """
    if check is not None:
        from stitchkit.encoders.check import check_spec

        show_warnings()
        report = check_spec(check, device=device)
        emit(report, as_json=as_json, text=check_text(report))
        return

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

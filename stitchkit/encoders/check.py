"""What a spec resolved to, for ``stitch models --check SPEC``: preprocessing, BatchNorm eps,
how the weights' keys were matched, and the ImageNet top-5 of a real photo when the checkpoint
still has its ImageNet classifier (the quickest proof that a checkpoint loaded right)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch

from .registry import load_encoder, parse_spec
from .specs import space_identity

# A real photo that ships with scikit-learn (a dependency): sklearn/datasets/images/china.jpg,
# CC BY 2.0, danielbuechele on Flickr. A Chinese temple, 640x427; ImageNet-1k weights that
# loaded right put "palace" (class 698) first.
PALACE = 698
TEST_PHOTO = {"name": "china.jpg", "subject": "a Chinese temple",
              "source": "scikit-learn's sample image, CC BY 2.0",
              "expected": "palace (698) first"}

_PIL_FILTERS = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


def sample_photo() -> Any:
    """The bundled test photo as a PIL image."""
    from PIL import Image
    from sklearn.datasets import load_sample_image

    return Image.fromarray(load_sample_image(TEST_PHOTO["name"]))


def _size(value: Any) -> list[int] | None:
    """A processor's size ({'height', 'width'}, {'shortest_edge'}, [224], 224) as [h, w]."""
    if isinstance(value, dict):
        if "height" in value and "width" in value:
            return [int(value["height"]), int(value["width"])]
        edge = value.get("shortest_edge")
        return [int(edge), int(edge)] if edge else None
    if isinstance(value, (list, tuple)) and value:
        return [int(value[0]), int(value[-1])]
    if isinstance(value, (int, float)):
        return [int(value), int(value)]
    return None


def summarise_preprocessing(prep: dict[str, Any]) -> dict[str, Any]:
    """Resolution, crop, interpolation and mean/std, whichever backend's keys ``prep`` uses
    (timm / keras: input_size + crop_pct; torchvision: resize_size + crop_size; hf: the
    processor's size, crop_size, resample, image_mean / image_std)."""
    out: dict[str, Any] = {}
    if "input_size" in prep:
        out["resolution"] = [int(v) for v in prep["input_size"][1:]]
        if "crop_pct" in prep:
            out["crop_pct"] = float(prep["crop_pct"])
    elif "crop_size" in prep:
        crop, resize = _size(prep["crop_size"]), _size(prep.get("resize_size") or prep.get("size"))
        out["resolution"] = crop
        if prep.get("do_center_crop", True) and crop and resize:
            out["crop_pct"] = round(min(crop) / min(resize), 4)
        elif crop:
            out["crop_pct"] = 1.0
    elif "size" in prep:
        out["resolution"] = _size(prep["size"])
        out["crop_pct"] = 1.0
    interpolation = prep.get("interpolation", prep.get("resample"))
    if interpolation is not None:
        out["interpolation"] = _PIL_FILTERS.get(interpolation, interpolation) \
            if isinstance(interpolation, int) else str(interpolation)
    for key, alias in (("mean", "image_mean"), ("std", "image_std")):
        value = prep.get(key, prep.get(alias))
        if value is not None:
            out[key] = [float(v) for v in value]
    if "scale" in prep:
        out["scale"] = prep["scale"]
    if "mode" in prep:
        out["mode"] = prep["mode"]
    return out


def batchnorm_eps(module: Any) -> dict[str, int]:
    """How many BatchNorm layers use each eps (as the model will run, after any ``bn_eps``)."""
    if not isinstance(module, torch.nn.Module):
        return {}
    found = Counter(f"{m.eps:g}" for m in module.modules()
                    if isinstance(m, torch.nn.modules.batchnorm._BatchNorm))
    return dict(sorted(found.items()))


def imagenet_top5(encoder: Any) -> list[dict[str, Any]] | None:
    """The five most probable ImageNet-1k classes of the test photo, or None without a head."""
    batch = encoder.collate([encoder.prepare(sample_photo())])
    with torch.inference_mode():
        logits = encoder.imagenet_logits(batch)
    if logits is None:
        return None
    probs, idx = logits.softmax(-1)[0].topk(5)
    try:
        from timm.data import ImageNetInfo

        describe = ImageNetInfo().index_to_description
    except ImportError:  # timm is a dependency; a label is a nicety
        def describe(i: int) -> str:
            return f"class {i}"
    return [{"class": int(i), "label": describe(int(i)), "p": round(float(p), 4)}
            for p, i in zip(probs, idx, strict=True)]


def check_spec(spec: str, device: str = "cpu") -> dict[str, Any]:
    """Load ``spec`` (torch runtime) and report what it resolved to.

    Keys: spec, backend, name, short_name, modality, dim, options (as resolved, weights path
    included), weights (files), weights_sha256, weights_match (how the file's tensors were
    matched to the model's: by name / by position, counts), preprocessing (resolution,
    crop_pct, interpolation, mean, std, mode), preprocessing_full (what stores record),
    batchnorm_eps ({eps: layers}), imagenet_top5 (None without an ImageNet head), test_photo,
    order_check (weights matched by position: :func:`order_check`), space (what identifies the
    embedding space: :func:`space_identity`).
    """
    parsed, card = parse_spec(spec)
    encoder = load_encoder(spec, device=device, runtime="torch")
    prep = encoder.preprocessing()
    sha = encoder.weights_sha256()
    top5 = imagenet_top5(encoder) if encoder.modality == "image" else None
    return {
        "spec": parsed.text,
        "backend": parsed.backend,
        "name": parsed.name,
        "short_name": card is not None,
        "modality": encoder.modality,
        "dim": encoder.dim,
        "options": dict(parsed.options),
        "weights": [str(f) for f in encoder.weight_files()],
        "weights_sha256": sha,
        "weights_match": encoder.weights_match,
        "preprocessing": summarise_preprocessing(prep) if encoder.modality == "image" else {},
        "preprocessing_full": prep,
        "batchnorm_eps": batchnorm_eps(getattr(encoder, "model", None)),
        "imagenet_top5": top5,
        "test_photo": TEST_PHOTO if top5 is not None else None,
        "order_check": order_check(encoder.weights_match, sha, top5),
        "space": space_identity(parsed.text, sha),
    }


def order_check(match: dict[str, Any] | None, sha: str, top5: list[dict[str, Any]] | None) -> dict[str, Any] | None:
    """For weights matched by position: did the outputs show the order right (the photo is a
    palace)? A clean check is remembered (:func:`remember_position_order`) so that loading the
    file stops warning; anything else leaves the warning on. None when not matched by position."""
    import warnings

    from .weights import remember_position_order

    if not match or match.get("how") != "position":
        return None
    if top5 is None:
        return {"verified": False, "record": None,
                "note": "not verified: the file has no ImageNet head to test the order with, so loading it still warns"}
    if top5[0]["class"] != PALACE:
        return {"verified": False, "record": None,
                "note": f"not verified: the photo came out {top5[0]['label']!r}, not palace ({PALACE}): "
                        "the tensors may be in the wrong order, so loading it still warns"}
    try:
        record = remember_position_order(match["model"], sha, {"imagenet_top1": top5[0]})
    except OSError as exc:  # a read-only cache: the check still stands, it is just not kept
        warnings.warn(f"could not remember the check in the cache ({exc}): loading the file still warns",
                      stacklevel=2)
        return {"verified": True, "record": None, "note": "verified (palace first); not remembered"}
    return {"verified": True, "record": str(record),
            "note": f"verified (palace first); remembered in {record}, so loading the file no longer warns"}

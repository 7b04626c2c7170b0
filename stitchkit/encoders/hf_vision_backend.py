"""Hugging Face image encoders: AutoModel (or a dual encoder's vision tower, by class) with the
checkpoint's own AutoImageProcessor.

``hf:DIR_OR_NAME?pooling=cls|mean|pooler|proj`` (see :func:`stitchkit.encoders.hf_backend.load_hf`
for how the image or text tower is chosen). Pooling choices, per family:

* ``cls``: the class token of the last layer (ViT, DINOv2 / RAD-DINO, CLIP before its final norm).
* ``mean``: the mean of the patch tokens, class and register tokens excluded.
* ``pooler``: the model's own ``pooler_output`` (CLIP: the normed class token; SigLIP: its
  attention-pooling head; ConvNeXt / Swin: normed global average; DINOv2: the normed class token).
* ``proj``: CLIP-style towers only, the projected embedding in the joint image-text space.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..errors import ModelError
from .base import EncodeOutput, Encoder, ModelSpec
from .hf_loading import hub_hint, load_pretrained, trust_remote_code, weight_files

POOLINGS = ("cls", "mean", "pooler", "proj")


def to_mode(image: Image.Image, mode: str) -> Image.Image:
    """Convert a decoded X-ray to what the model takes ("RGB" or "L").

    16-bit and float greyscale (``I;16``, ``I``, ``F``) are rescaled to 8 bits by the image's
    own range first: PIL's plain ``convert`` clips them at 255, which turns most of a 12- or
    16-bit radiograph white.
    """
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(image, dtype=np.float32)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        image = Image.fromarray(arr.round().astype(np.uint8), mode="L")
    return image if image.mode == mode else image.convert(mode)


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _prefix_tokens(model: torch.nn.Module) -> int:
    """Tokens before the patches in ``last_hidden_state``: class, distillation, registers.

    Read from the embedding module's own parameters, so DINOv2-with-registers (class + N
    registers), DeiT (class + distillation), ViT / CLIP (class) and SigLIP (none) all come
    out right without a table of families.
    """
    for name, module in model.named_modules():
        if not name.split(".")[-1] == "embeddings":
            continue
        n = int(any(hasattr(module, a) for a in ("cls_token", "class_embedding")))
        n += int(getattr(module, "distillation_token", None) is not None)
        registers = getattr(module, "register_tokens", None)
        if isinstance(registers, torch.Tensor):
            n += int(registers.shape[1])
        return n
    return 0


class HFImageEncoder(Encoder):
    modality = "image"

    def __init__(self, spec: ModelSpec, device: torch.device, dtype: torch.dtype, *,
                 model_cls: Any, config: Any = None) -> None:
        super().__init__(spec, device, dtype)
        if "max_length" in spec.options:
            raise ModelError(f"model {spec.text!r}: max_length applies to text models; this is an "
                             "image model (its processor sets the size)")
        from transformers import AutoImageProcessor

        try:
            self.processor = AutoImageProcessor.from_pretrained(spec.name, trust_remote_code=trust_remote_code(spec))
        except OSError as exc:
            if Path(spec.name).is_dir() and not (Path(spec.name) / "preprocessor_config.json").exists():
                # The preprocessing must be the checkpoint's own: never guess it.
                raise ModelError(
                    f"model {spec.text!r}: {spec.name} has no preprocessor_config.json; save the image "
                    "processor the weights were trained with there (AutoImageProcessor.save_pretrained)"
                ) from exc
            raise hub_hint(spec, exc) from exc
        model, random_heads = load_pretrained(model_cls, spec, config)
        self.model = model.eval().to(device=device, dtype=dtype)
        channels = int(getattr(self.model.config, "num_channels", 3))
        self._mode = "L" if channels == 1 else "RGB"
        self.prefix = _prefix_tokens(self.model)

        # One forward pass on a blank image: proves the processor and the model fit, and gives
        # the output layout (pooler present? feature map or tokens?) and the width.
        with torch.inference_mode():
            probe = self._forward(self.prepare(Image.new("L", (64, 64)))[None])
        # A pooler missing from the checkpoint (ViT saved as a classifier) is random: not usable.
        self._has_pooler = getattr(probe, "pooler_output", None) is not None and not (
            random_heads & {"pooler", "head"})
        self._has_proj = getattr(probe, "image_embeds", None) is not None
        spatial = probe.last_hidden_state.ndim == 4
        default = ("proj" if self._has_proj else "pooler" if self._has_pooler
                   else "cls" if self.prefix and not spatial else "mean")
        self.pooling = spec.options.get("pooling", default)
        if self.pooling not in POOLINGS:
            raise ModelError(f"pooling {self.pooling!r} unknown for {spec.text}: use one of {', '.join(POOLINGS)}")
        missing = {
            "cls": (not self.prefix or spatial, "has no class token"),
            "pooler": (not self._has_pooler, "has no pooler output"),
            "proj": (not self._has_proj, "has no projection (CLIP-style towers only)"),
        }.get(self.pooling, (False, ""))
        if missing[0]:
            raise ModelError(f"{spec.text}: pooling={self.pooling} impossible, {type(model).__name__} {missing[1]}; "
                             "use pooling=mean")
        self._dim = int(self._pool(probe).shape[-1])

    def _forward(self, x: torch.Tensor) -> Any:
        return self.model(pixel_values=x.to(self.device, self.dtype, non_blocking=True))

    def _patches(self, hidden: torch.Tensor) -> torch.Tensor:
        if hidden.ndim == 4:  # CNN feature map (B, C, H, W) -> (B, H*W, C)
            return hidden.flatten(2).transpose(1, 2)
        return hidden[:, self.prefix :]

    def _pool(self, out: Any) -> torch.Tensor:
        if self.pooling == "cls":
            return out.last_hidden_state[:, 0]
        if self.pooling == "mean":
            return self._patches(out.last_hidden_state).mean(1)
        pooled = out.pooler_output if self.pooling == "pooler" else out.image_embeds
        return pooled.flatten(1)  # some CNNs (HF ResNet) pool to (B, C, 1, 1)

    @property
    def dim(self) -> int:
        return self._dim

    def weight_files(self) -> list[Path]:
        return weight_files(self.spec.name)

    def preprocessing(self) -> dict[str, Any]:
        proc = {k: v for k, v in self.processor.to_dict().items() if not k.startswith("_")}
        return _jsonable({
            "mode": self._mode, "pooling": self.pooling, "prefix_tokens": self.prefix,
            "model_class": type(self.model).__name__, "processor": type(self.processor).__name__,
            **proc,
        })

    def prepare(self, item: Any) -> torch.Tensor:
        image = to_mode(item, self._mode)
        return self.processor(images=image, return_tensors="pt")["pixel_values"][0]

    def encode(self, batch: torch.Tensor, *, tokens: bool = False) -> EncodeOutput:
        out = self._forward(batch)
        pooled = self._pool(out).float()
        if not tokens:
            return EncodeOutput(pooled)
        toks = self._patches(out.last_hidden_state).float()
        return EncodeOutput(pooled, toks, torch.ones(toks.shape[:2], dtype=torch.bool))

"""timm image models: a name, local weights (or the hub) and timm's own data config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..errors import ModelError
from .base import EncodeOutput, Encoder, ModelSpec, with_patch_tokens
from .cards import MODELS
from .onnx_runtime import OnnxRuntimeMixin
from .pixels import EightBitPixels
from .registry import offline_hint
from .specs import Choice, Integer, Number, Numbers, Option, Text
from .weights import load_into

INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "lanczos", "box", "hamming")
# Options that only change preprocessing, not the exported graph (see onnx_identity).
PREPROCESSING_ONLY = ("weights", "crop_pct", "interpolation", "mean", "std")

OPTIONS = (
    Option("weights", Text("a file path"),
           "a local state dict (.pth, .pt, .bin or .safetensors; torch.load with weights_only=True) "
           "loaded into the architecture; without it timm fetches its hub weights",
           "always offline; tensors are matched by name, else by position when only the names "
           "differ (announced; check with `stitch models --check`)", space=False),
    Option("bn_eps", Number(0.0),
           "sets the eps of every BatchNorm layer (timm builds 1e-5)",
           "weights trained in TensorFlow/Keras (TF-Lite EfficientNet-Lite, Keras applications) "
           "used 1e-3: with timm's 1e-5 every feature is slightly off"),
    Option("crop_pct", Number(0.0, 1.0),
           "the centre crop: resize to img_size / crop_pct, then crop img_size (1.0: the whole "
           "image resized, no crop)",
           "ImageNet evaluation crops 87.5 %; framed chest X-rays want 1.0 so the lung edges stay"),
    Option("img_size", Integer(16),
           "the input resolution (square), replacing the checkpoint's data config",
           "weights trained or fine-tuned at another resolution (Lite2: 260)"),
    Option("interpolation", Choice(INTERPOLATIONS),
           "the resampling filter of the resize (timm's data config gives the default)",
           "match what the checkpoint was trained with; bilinear vs bicubic moves features a little"),
    Option("mean", Numbers(),
           "per-channel mean subtracted after scaling to [0, 1] (one number or three)",
           "checkpoints trained with other normalisation: TF ports and Inception-style 0.5,0.5,0.5"),
    Option("std", Numbers(),
           "per-channel standard deviation divided by (one number or three)",
           "as mean: it must be what the checkpoint was trained with"),
)


class TimmEncoder(OnnxRuntimeMixin, Encoder):
    modality = "image"
    options = OPTIONS

    def __init__(self, spec: ModelSpec, device: torch.device, dtype: torch.dtype) -> None:
        super().__init__(spec, device, dtype)
        import timm
        import timm.data

        opts = spec.options
        self._weights = Path(opts["weights"]) if "weights" in opts else None
        try:
            model = timm.create_model(spec.name, pretrained=self._weights is None)
        except RuntimeError as exc:
            if "Unknown model" in str(exc):
                raise ModelError(
                    f"timm has no model named {spec.name!r}: see timm.list_models()"
                ) from exc
            raise offline_hint(spec, exc) from exc
        except (OSError, ValueError) as exc:
            raise offline_hint(spec, exc) from exc
        head = (getattr(model, "pretrained_cfg", None) or {}).get("classifier") if model.num_classes else None
        heads = tuple(f"{h}." for h in ((head,) if isinstance(head, str) else head or ()))
        if self._weights is not None:
            # A packaged short name's position matching is checked by the test suite (a photo
            # classified as ImageNet's "palace"): only other specs are warned about.
            self.weights_match = load_into(model, self._weights, f"timm:{spec.name}", optional=heads,
                                           warn=spec.text not in MODELS)
            has_head = bool(self.weights_match["head_loaded"])
        else:
            self.weights_match = {"how": "timm hub (pretrained=True)"}
            has_head = bool(heads)
        # Kept aside for `stitch models --check` (ImageNet top-5 of a test photo).
        classifier = model.get_classifier() if has_head and model.num_classes == 1000 else None
        self._imagenet_head = classifier if isinstance(classifier, torch.nn.Linear) else None
        model.reset_classifier(0)
        if "bn_eps" in opts:
            for module in model.modules():
                if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                    module.eps = float(opts["bn_eps"])
        # channels_last lets oneDNN pick its fast convolution kernels: 1.7x the images/s of
        # Lite0 on this project's 2-core CPU, same values to 1e-5.
        self.model = model.eval().to(device=device, dtype=dtype, memory_format=torch.channels_last)

        cfg = timm.data.resolve_model_data_config(model)
        if "crop_pct" in opts:
            cfg["crop_pct"] = float(opts["crop_pct"])
        if "img_size" in opts:
            size = int(opts["img_size"])
            cfg["input_size"] = (cfg["input_size"][0], size, size)
        if "interpolation" in opts:
            cfg["interpolation"] = opts["interpolation"]
        for key in ("mean", "std"):
            if key in opts:
                cfg[key] = Numbers()(opts[key])
        self._cfg = cfg
        self._mode = "L" if cfg["input_size"][0] == 1 else "RGB"
        self._transform = timm.data.create_transform(**cfg, is_training=False)
        self._pixels = EightBitPixels.split(self._transform, tuple(cfg["input_size"][1:]))  # None: float32

    @property
    def dim(self) -> int:
        return int(self.model.num_features)

    def weight_files(self) -> list[Path]:
        return [self._weights] if self._weights else []

    def preprocessing(self) -> dict[str, Any]:
        return {"mode": self._mode, **{k: list(v) if isinstance(v, tuple) else v for k, v in self._cfg.items()}}

    def prepare(self, item: Any) -> torch.Tensor:
        """8-bit (C, H, W) pixels where the transform ends in ToTensor + Normalize (``encode``
        normalises them: :mod:`~stitchkit.encoders.pixels`), else the transform's float32."""
        image = item.convert(self._mode)
        return self._pixels.prepare(image) if self._pixels else self._transform(image)

    def normalise(self, batch: torch.Tensor, *, reuse: bool = False) -> torch.Tensor:
        return self._pixels.normalise(batch, reuse=reuse) if self._pixels else batch

    def _model_input(self, batch: torch.Tensor) -> torch.Tensor:
        # 8-bit pixels cross to a GPU; the normalised copy is done with once the forward has run
        x = self.normalise(batch.to(self.device, non_blocking=True), reuse=True)
        return x.to(self.dtype, memory_format=torch.channels_last)

    def onnx_input_size(self) -> tuple[int, int, int]:
        return tuple(self._cfg["input_size"])

    def onnx_identity(self) -> dict[str, Any]:
        # Not the weights' path or what only preprocessing reads: the weights' bytes.
        graph_opts = {k: v for k, v in self.spec.options.items() if k not in PREPROCESSING_ONLY}
        return {"arch": f"timm:{self.spec.name}", "options": graph_opts,
                "weights_sha256": self.weights_sha256() or "timm-hub"}

    def imagenet_logits(self, batch: torch.Tensor) -> torch.Tensor | None:
        if self._imagenet_head is None:
            return None
        x = self._model_input(batch)
        head = self._imagenet_head.to(device=self.device, dtype=self.dtype)
        return head(self.model(x)).float()

    def encode(self, batch: torch.Tensor, *, tokens: bool = False) -> EncodeOutput:
        if self.runtime == "onnx":
            return self.onnx_encode(self.normalise(batch, reuse=True), tokens)
        x = self._model_input(batch)
        if not tokens:
            return EncodeOutput(self.model(x).float())
        feats = self.model.forward_features(x)
        pooled = self.model.forward_head(feats, pre_logits=True)
        return with_patch_tokens(pooled, feats, getattr(self.model, "num_prefix_tokens", 0))

"""timm image models: a name, local weights (or the hub) and timm's own data config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..errors import ModelError
from .base import EncodeOutput, Encoder, ModelSpec, with_patch_tokens
from .onnx_runtime import OnnxRuntimeMixin
from .registry import offline_hint
from .weights import load_into


class TimmEncoder(OnnxRuntimeMixin, Encoder):
    modality = "image"

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
        if self._weights is not None:
            load_into(model, self._weights, f"timm:{spec.name}")
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
        self._cfg = cfg
        self._mode = "L" if cfg["input_size"][0] == 1 else "RGB"
        self._transform = timm.data.create_transform(**cfg, is_training=False)

    @property
    def dim(self) -> int:
        return int(self.model.num_features)

    def weight_files(self) -> list[Path]:
        return [self._weights] if self._weights else []

    def preprocessing(self) -> dict[str, Any]:
        return {"mode": self._mode, **{k: list(v) if isinstance(v, tuple) else v for k, v in self._cfg.items()}}

    def prepare(self, item: Any) -> torch.Tensor:
        return self._transform(item.convert(self._mode))

    def onnx_input_size(self) -> tuple[int, int, int]:
        return tuple(self._cfg["input_size"])

    def onnx_identity(self) -> dict[str, Any]:
        # Not the weights' path or crop_pct (only preprocessing reads it): the weights' bytes.
        graph_opts = {k: v for k, v in self.spec.options.items() if k not in ("weights", "crop_pct")}
        return {"arch": f"timm:{self.spec.name}", "options": graph_opts,
                "weights_sha256": self.weights_sha256() or "timm-hub"}

    def encode(self, batch: torch.Tensor, *, tokens: bool = False) -> EncodeOutput:
        if self.runtime == "onnx":
            return self.onnx_encode(batch, tokens)
        x = batch.to(self.device, self.dtype, non_blocking=True, memory_format=torch.channels_last)
        if not tokens:
            return EncodeOutput(self.model(x).float())
        feats = self.model.forward_features(x)
        pooled = self.model.forward_head(feats, pre_logits=True)
        return with_patch_tokens(pooled, feats, getattr(self.model, "num_prefix_tokens", 0))

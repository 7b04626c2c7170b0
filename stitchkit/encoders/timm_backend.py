"""timm image models: a name, local weights (or the hub) and timm's own data config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..errors import ModelError
from .base import EncodeOutput, Encoder, ModelSpec
from .onnx_runtime import OnnxForward
from .registry import offline_hint
from .weights import load_into


class TimmEncoder(Encoder):
    modality = "image"
    runtimes = ("torch", "onnx")

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
        self._onnx: OnnxForward | None = None  # exported on the first set_runtime("onnx")

    @property
    def dim(self) -> int:
        return int(self.model.num_features)

    def weight_files(self) -> list[Path]:
        return [self._weights] if self._weights else []

    def preprocessing(self) -> dict[str, Any]:
        return {"mode": self._mode, **{k: list(v) if isinstance(v, tuple) else v for k, v in self._cfg.items()}}

    def prepare(self, item: Any) -> torch.Tensor:
        return self._transform(item.convert(self._mode))

    def set_runtime(self, runtime: str) -> None:
        if runtime == "onnx" and self._onnx is None:
            # What defines the graph: architecture, the options that change it (not the
            # weights' path or crop_pct, which only preprocessing reads) and the weights' bytes.
            graph_opts = {k: v for k, v in self.spec.options.items() if k not in ("weights", "crop_pct")}
            identity = {"arch": f"timm:{self.spec.name}", "options": graph_opts,
                        "weights_sha256": self.weights_sha256() or "timm-hub"}
            self._onnx = OnnxForward(self.model, tuple(self._cfg["input_size"]), identity)
        super().set_runtime(runtime)

    def runtime_info(self) -> dict[str, Any]:
        if self.runtime == "onnx" and self._onnx is not None:
            return self._onnx.info()
        return super().runtime_info()

    @property
    def export_seconds(self) -> float | None:
        return self._onnx.export_seconds if self.runtime == "onnx" and self._onnx else None

    def encode(self, batch: torch.Tensor, *, tokens: bool = False) -> EncodeOutput:
        if self.runtime == "onnx" and self._onnx is not None:
            pooled, feats = self._onnx.run(batch, tokens=tokens)
            return EncodeOutput(pooled) if feats is None else self._with_tokens(pooled, feats)
        x = batch.to(self.device, self.dtype, non_blocking=True, memory_format=torch.channels_last)
        if not tokens:
            return EncodeOutput(self.model(x).float())
        feats = self.model.forward_features(x)
        pooled = self.model.forward_head(feats, pre_logits=True)
        return self._with_tokens(pooled.float(), feats)

    def _with_tokens(self, pooled: torch.Tensor, feats: torch.Tensor) -> EncodeOutput:
        if feats.ndim == 4:  # CNN feature map (B, C, H, W) -> (B, H*W, C)
            toks = feats.flatten(2).transpose(1, 2)
        else:  # ViT (B, T, D): drop class / register tokens, keep the patches
            toks = feats[:, getattr(self.model, "num_prefix_tokens", 0) :]
        mask = torch.ones(toks.shape[:2], dtype=torch.bool)
        return EncodeOutput(pooled, toks.float(), mask)

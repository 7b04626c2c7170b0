"""open_clip towers: ``open_clip:NAME_OR_CONFIG.json?weights=CKPT&tower=image|text``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..errors import ModelError
from .base import EncodeOutput, Encoder, ModelSpec
from .registry import offline_hint
from .specs import Choice, Option, Text

OPTIONS = (
    Option("weights", Text("a file path or an open_clip pretrained tag"),
           "a local checkpoint (or one of open_clip's pretrained tags, which needs a hub)",
           "always offline; hf-hub: names carry their own weights", space=False),
    Option("tower", Choice(("image", "text")),
           "which tower to run: images through encode_image, texts through encode_text",
           "the default is image; text for prompts and reports"),
)


class OpenClipEncoder(Encoder):
    options = OPTIONS

    def __init__(self, spec: ModelSpec, device: torch.device, dtype: torch.dtype) -> None:
        super().__init__(spec, device, dtype)
        import open_clip

        self.tower = spec.options.get("tower", "image")
        if self.tower not in ("image", "text"):
            raise ModelError(f"tower {self.tower!r} unknown for {spec.text}: use image or text")
        self.modality = self.tower
        name = spec.name
        if name.endswith(".json"):
            # A local model config: register it under its file stem, as open_clip's own API allows.
            config = Path(name)
            if not config.is_file():
                raise ModelError(f"open_clip config {config} does not exist")
            open_clip.add_model_config(config)
            name = config.stem
        weights = spec.options.get("weights")
        self._weights = Path(weights) if weights else None
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                name, pretrained=weights, device=device
            )
        except RuntimeError as exc:
            raise ModelError(f"open_clip cannot build {name!r}: {exc}") from exc
        except (OSError, ValueError) as exc:
            raise offline_hint(spec, exc) from exc
        self.model = model.eval().to(dtype=dtype)
        self._preprocess = preprocess
        self._tokenizer = open_clip.get_tokenizer(name) if self.tower == "text" else None

    @property
    def dim(self) -> int:
        probe = self.model.text_projection if self.tower == "text" else None
        if probe is not None and hasattr(probe, "shape"):
            return int(probe.shape[-1])
        return int(self.model.visual.output_dim)

    def weight_files(self) -> list[Path]:
        # A pretrained tag (not a file) has nothing here to hash.
        return [self._weights] if self._weights and self._weights.is_file() else []

    def preprocessing(self) -> dict[str, Any]:
        if self.tower == "text":
            return {"tokenizer": type(self._tokenizer).__name__}
        return {"mode": "RGB", "transform": repr(self._preprocess)}

    def prepare(self, item: Any) -> Any:
        if self.tower == "text":
            return item
        return self._preprocess(item.convert("RGB"))

    def encode(self, batch: Any, *, tokens: bool = False) -> EncodeOutput:
        if self.tower == "text":
            if tokens:
                raise ModelError("tokens (--tokens) is not supported for open_clip text towers")
            ids = self._tokenizer(batch).to(self.device)
            return EncodeOutput(self.model.encode_text(ids).float())
        x = batch.to(self.device, self.dtype)
        visual = self.model.visual
        if not tokens:
            return EncodeOutput(self.model.encode_image(x).float())
        if not hasattr(visual, "output_tokens"):
            raise ModelError(f"{self.spec.text}: this image tower does not expose tokens")
        visual.output_tokens = True
        try:
            pooled, toks = visual(x)
        finally:
            visual.output_tokens = False
        mask = torch.ones(toks.shape[:2], dtype=torch.bool)
        return EncodeOutput(pooled.float(), toks.float(), mask)

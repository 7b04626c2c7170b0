"""Hugging Face encoders: ``hf:`` transformers checkpoints (text, image, or one tower of a dual
encoder) and ``st:`` sentence-transformers directories (their own pooling and normalisation).

``hf:DIR_OR_NAME`` reads the checkpoint's config to pick the modality: a vision config (one
with ``num_channels``) loads AutoModel + AutoImageProcessor (:mod:`.hf_vision_backend`), any
other AutoModel + AutoTokenizer. Dual encoders (CLIP, SigLIP: a config holding both a
``vision_config`` and a ``text_config``) need ``?tower=image|text``; the tower is loaded by its
own class (``CLIPVisionModel``, ``SiglipTextModel`` ...) so only its weights are read.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import torch

from ..errors import ModelError
from .base import EncodeOutput, Encoder, ModelSpec
from .hf_loading import (
    hub_hint,
    load_pretrained,
    model_class,
    pick_tower,
    quiet_transformers,
    trust_remote_code,
    weight_files,
)
from .registry import offline_hint
from .specs import Choice, Flag, Integer, Option, Text

TRUST_REMOTE_CODE = Option(
    "trust_remote_code", Flag(),
    "allows the directory's own Python code (an auto_map in its config) to run",
    "custom architectures such as CXR-BERT; off unless given, as it runs arbitrary code",
    space=False)
HF_OPTIONS = (
    Option("pooling", Choice(("pooler", "cls", "mean", "proj")),
           "which output is the vector: the model's pooler_output, the class token, the mean of "
           "the patch (image) or unmasked (text) tokens, or a CLIP-style projection",
           "the default is the model's trained pooler (else cls for ViTs, mean for text and CNNs); "
           "a choice the model cannot give is refused"),
    Option("tower", Choice(("image", "text")),
           "which tower of a dual encoder (CLIP, SigLIP, MedSigLIP) to load, by its own class",
           "required for dual encoders; checked against the config otherwise"),
    Option("max_length", Integer(1),
           "text models: tokens kept per text (truncation)",
           "long reports: the default is the model's limit, at most 512"),
    TRUST_REMOTE_CODE,
)
ST_OPTIONS = (
    Option("weights", Text("a directory path"),
           "the sentence-transformers directory, when the name is only a label",
           "rarely: st:DIR names the directory already", space=False),
    TRUST_REMOTE_CODE,
)


def load_hf(spec: ModelSpec, device: torch.device, dtype: torch.dtype) -> Encoder:
    """The ``hf:`` backend: read the config, then build the image or the text encoder."""
    from transformers import AutoConfig

    quiet_transformers()
    try:
        config = AutoConfig.from_pretrained(spec.name, trust_remote_code=trust_remote_code(spec))
    except (OSError, ValueError) as exc:
        raise hub_hint(spec, exc) from exc
    tower = pick_tower(spec, config)
    model_cls, tower_config = model_class(spec, config, tower, spec.options.get("pooling") == "proj")
    if tower == "image":
        from .hf_vision_backend import HFImageEncoder

        return HFImageEncoder(spec, device, dtype, model_cls=model_cls, config=tower_config)
    return HFEncoder(spec, device, dtype, model_cls=model_cls, config=tower_config)


load_hf.options = HF_OPTIONS  # type: ignore[attr-defined]  # what `hf:` takes (registry.parse_spec)


class HFEncoder(Encoder):
    """``hf:DIR_OR_NAME?pooling=mean|cls|pooler|proj&max_length=N`` for text: AutoModel +
    AutoTokenizer, or the text tower of a dual encoder loaded by its own class."""

    modality = "text"
    options = HF_OPTIONS

    def __init__(self, spec: ModelSpec, device: torch.device, dtype: torch.dtype, *,
                 model_cls: Any = None, config: Any = None) -> None:
        super().__init__(spec, device, dtype)
        from transformers import AutoModel, AutoTokenizer

        quiet_transformers()
        model_cls = model_cls or AutoModel
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(spec.name, trust_remote_code=trust_remote_code(spec))
        except OSError as exc:
            raise hub_hint(spec, exc) from exc
        except ImportError as exc:  # SigLIP's SentencePiece tokenizer, for one
            raise ModelError(f"model {spec.text!r}: its tokenizer needs a package that is not "
                             f"installed ({str(exc).strip().splitlines()[0][:160]})") from exc
        model, random_heads = load_pretrained(model_cls, spec, config)
        self.model = model.eval().to(device=device, dtype=dtype)
        config = self.model.config
        limit = min(getattr(self.tokenizer, "model_max_length", 512), 512,
                    getattr(config, "max_position_embeddings", 512))
        self.max_length = int(spec.options.get("max_length", limit))
        # SigLIP's text tower pools the last position: it was trained on texts padded to a
        # fixed length, and its processor pads the same way.
        self._padding: bool | str = "max_length" if config.model_type.startswith("siglip") else True
        params = inspect.signature(self.model.forward).parameters
        self._accepts = {k for k in ("input_ids", "attention_mask", "token_type_ids") if k in params}
        with torch.inference_mode():
            probe = self._forward(["probe"])
        has_pooler = getattr(probe, "pooler_output", None) is not None and "pooler" not in random_heads
        has_proj = getattr(probe, "text_embeds", None) is not None
        tower = model_cls is not AutoModel
        default = "proj" if has_proj else "pooler" if tower and has_pooler else "mean"
        self.pooling = spec.options.get("pooling", default)
        if self.pooling not in ("mean", "cls", "pooler", "proj"):
            raise ModelError(f"pooling {self.pooling!r} unknown for {spec.text}: use mean, cls, pooler or proj")
        if self.pooling == "pooler" and not has_pooler:
            raise ModelError(f"{spec.text}: pooling=pooler impossible, the checkpoint has no trained "
                             "pooler weights; use pooling=mean or cls")
        self._dim = int(self._pool(probe, self._mask).shape[-1])

    def _forward(self, batch: list[str]) -> Any:
        enc = self.tokenizer(batch, padding=self._padding, truncation=True, max_length=self.max_length,
                             return_tensors="pt").to(self.device)
        self._mask = enc["attention_mask"].bool()
        # Only what this forward takes: a BERT tokenizer's token_type_ids mean nothing to CLIP.
        inputs = {k: v for k, v in enc.items() if k in self._accepts}
        if self.model.config.model_type.startswith("siglip"):
            inputs.pop("attention_mask")  # SigLIP attends to its padding, as in training
        return self.model(**inputs)

    def _pool(self, out: Any, mask: torch.Tensor) -> torch.Tensor:
        if self.pooling == "pooler":
            return out.pooler_output
        if self.pooling == "proj":
            return out.text_embeds
        hidden = out.last_hidden_state
        if self.pooling == "cls":
            return hidden[:, 0]
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)

    @property
    def dim(self) -> int:
        return self._dim

    def weight_files(self) -> list[Path]:
        return weight_files(self.spec.name)

    def preprocessing(self) -> dict[str, Any]:
        return {"pooling": self.pooling, "max_length": self.max_length, "truncation": True,
                "padding": self._padding, "model_class": type(self.model).__name__,
                "tokenizer": type(self.tokenizer).__name__}

    def encode(self, batch: list[str], *, tokens: bool = False) -> EncodeOutput:
        out = self._forward(batch)
        mask = self._mask
        pooled = self._pool(out, mask).float()
        if not tokens:
            return EncodeOutput(pooled)
        return EncodeOutput(pooled, out.last_hidden_state.float(), mask.cpu())


class SentenceTransformerEncoder(Encoder):
    """``st:DIR_OR_NAME``: the directory's own modules (pooling, normalisation) decide."""

    modality = "text"
    options = ST_OPTIONS

    def __init__(self, spec: ModelSpec, device: torch.device, dtype: torch.dtype) -> None:
        super().__init__(spec, device, dtype)
        from sentence_transformers import SentenceTransformer

        quiet_transformers()
        path = spec.options.get("weights", spec.name)
        self._path = path
        try:
            model = SentenceTransformer(path, device=str(device), trust_remote_code=trust_remote_code(spec))
        except (OSError, ValueError) as exc:
            raise offline_hint(spec, exc) from exc
        self.model = model.eval().to(dtype=dtype)

    @property
    def dim(self) -> int:
        get_dim = getattr(self.model, "get_embedding_dimension", None)
        return int((get_dim or self.model.get_sentence_embedding_dimension)())

    def weight_files(self) -> list[Path]:
        return weight_files(self._path)

    def preprocessing(self) -> dict[str, Any]:
        modules = [type(m).__name__ for m in self.model]
        return {"modules": modules, "max_seq_length": self.model.max_seq_length}

    def encode(self, batch: list[str], *, tokens: bool = False) -> EncodeOutput:
        prepare = getattr(self.model, "preprocess", None) or self.model.tokenize
        features = {
            k: v.to(self.device) if isinstance(v, torch.Tensor) else v
            for k, v in prepare(batch).items()
        }
        out = self.model(features)
        pooled = out["sentence_embedding"].float()
        if not tokens:
            return EncodeOutput(pooled)
        return EncodeOutput(pooled, out["token_embeddings"].float(), out["attention_mask"].bool().cpu())

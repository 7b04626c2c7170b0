"""Text encoders from Hugging Face: plain transformers (CLS or mean pooling) and
sentence-transformers directories (their own pooling and normalisation)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..errors import ModelError
from .base import EncodeOutput, Encoder, ModelSpec
from .registry import offline_hint


def _quiet() -> None:
    """Loading bars and notices from transformers would drown the job's own progress lines."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def _weight_files(path: str) -> list[Path]:
    root = Path(path)
    if not root.is_dir():
        return []
    return sorted(p for p in root.rglob("*") if p.suffix in (".safetensors", ".bin") and p.is_file())


def _trust(spec: ModelSpec) -> bool:
    # Remote code runs arbitrary Python from the model folder: only when the user says so.
    return spec.options.get("trust_remote_code", "0").lower() in ("1", "true", "yes")


class HFEncoder(Encoder):
    """``hf:DIR_OR_NAME?pooling=mean|cls&max_length=N``: AutoModel + AutoTokenizer."""

    modality = "text"

    def __init__(self, spec: ModelSpec, device: torch.device, dtype: torch.dtype) -> None:
        super().__init__(spec, device, dtype)
        from transformers import AutoModel, AutoTokenizer

        _quiet()
        self.pooling = spec.options.get("pooling", "mean")
        if self.pooling not in ("mean", "cls"):
            raise ModelError(f"pooling {self.pooling!r} unknown for {spec.text}: use mean or cls")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(spec.name, trust_remote_code=_trust(spec))
            model = AutoModel.from_pretrained(spec.name, trust_remote_code=_trust(spec))
        except OSError as exc:
            raise offline_hint(spec, exc) from exc
        self.model = model.eval().to(device=device, dtype=dtype)
        limit = getattr(self.tokenizer, "model_max_length", 512)
        self.max_length = int(spec.options.get("max_length", min(limit, 512)))

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    def weight_files(self) -> list[Path]:
        return _weight_files(self.spec.name)

    def preprocessing(self) -> dict[str, Any]:
        return {"pooling": self.pooling, "max_length": self.max_length, "truncation": True}

    def encode(self, batch: list[str], *, tokens: bool = False) -> EncodeOutput:
        enc = self.tokenizer(
            batch, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(self.device)
        hidden = self.model(**enc).last_hidden_state.float()
        mask = enc["attention_mask"].bool()
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            weights = mask.unsqueeze(-1).float()
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        return EncodeOutput(pooled, hidden if tokens else None, mask.cpu() if tokens else None)


class SentenceTransformerEncoder(Encoder):
    """``st:DIR_OR_NAME``: the directory's own modules (pooling, normalisation) decide."""

    modality = "text"

    def __init__(self, spec: ModelSpec, device: torch.device, dtype: torch.dtype) -> None:
        super().__init__(spec, device, dtype)
        from sentence_transformers import SentenceTransformer

        _quiet()
        path = spec.options.get("weights", spec.name)
        self._path = path
        try:
            model = SentenceTransformer(path, device=str(device), trust_remote_code=_trust(spec))
        except (OSError, ValueError) as exc:
            raise offline_hint(spec, exc) from exc
        self.model = model.eval().to(dtype=dtype)

    @property
    def dim(self) -> int:
        get_dim = getattr(self.model, "get_embedding_dimension", None)
        return int((get_dim or self.model.get_sentence_embedding_dimension)())

    def weight_files(self) -> list[Path]:
        return _weight_files(self._path)

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

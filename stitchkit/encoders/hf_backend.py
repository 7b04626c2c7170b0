"""Hugging Face encoders: ``hf:`` transformers checkpoints (text, image, or one tower of a dual
encoder) and ``st:`` sentence-transformers directories (their own pooling and normalisation).

``hf:DIR_OR_NAME`` reads the checkpoint's config to pick the modality: a vision config (one
with ``num_channels``) loads AutoModel + AutoImageProcessor (:mod:`.hf_vision_backend`), any
other AutoModel + AutoTokenizer. Dual encoders (CLIP, SigLIP: a config holding both a
``vision_config`` and a ``text_config``) need ``?tower=image|text``; the tower is loaded by its
own class (``CLIPVisionModel``, ``SiglipTextModel`` ...) so only its weights are read.
"""

from __future__ import annotations

import copy
import inspect
from pathlib import Path
from typing import Any

import torch

from ..errors import ModelError
from .base import EncodeOutput, Encoder, ModelSpec
from .registry import offline_hint

# Heads whose weights a checkpoint may lack (an image classifier saved without ViT's pooler):
# missing there means "randomly initialised", so that pooling is refused; missing anywhere
# else means the checkpoint is not this architecture.
OPTIONAL_HEADS = ("pooler.", "head.", "visual_projection.", "text_projection.")


def _quiet() -> None:
    """Loading bars and notices from transformers would drown the job's own progress lines."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def weight_files(path: str) -> list[Path]:
    root = Path(path)
    if not root.is_dir():
        return []
    return sorted(p for p in root.rglob("*") if p.suffix in (".safetensors", ".bin") and p.is_file())



def _trust(spec: ModelSpec) -> bool:
    # Remote code runs arbitrary Python from the model folder: only when the user says so.
    return spec.options.get("trust_remote_code", "0").lower() in ("1", "true", "yes")


def hub_hint(spec: ModelSpec, exc: BaseException) -> ModelError:
    """The one line for an ``hf:`` name that cannot be loaded: custom code not allowed, a
    missing or foreign directory, or a hub name while no hub can be reached."""
    name = spec.name
    if "trust_remote_code" in str(exc):
        return ModelError(f"model {spec.text!r} ships its own Python code (a custom architecture): "
                          "add ?trust_remote_code=1 to run it, only if you trust its source")
    if name.startswith(("/", ".", "~")) or Path(name).exists():
        if not Path(name).expanduser().exists():
            return ModelError(f"model {spec.text!r}: {name} does not exist: give a model directory "
                              "saved with save_pretrained (config.json + weights)")
        detail = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        return ModelError(f"model {spec.text!r}: {name} is not a Hugging Face model directory ({detail})")
    return ModelError(
        f"model {spec.text!r}: {name!r} is not a local directory and no model hub could be reached "
        f"({type(exc).__name__}); where the hub is reachable run `hf download {name} --local-dir DIR`, "
        "then use hf:DIR"
    )


def load_pretrained(model_cls: Any, spec: ModelSpec, config: Any = None) -> tuple[torch.nn.Module, set[str]]:
    """``from_pretrained`` that refuses a checkpoint of another architecture, and says which
    optional heads (pooler, projection) were not in it and so hold random weights."""
    extra = {"config": config} if config is not None else {}
    try:
        model, info = model_cls.from_pretrained(spec.name, trust_remote_code=_trust(spec),
                                                output_loading_info=True, **extra)
    except OSError as exc:
        raise hub_hint(spec, exc) from exc
    except (RuntimeError, ValueError) as exc:
        raise ModelError(f"model {spec.text!r}: the checkpoint does not fit {model_cls.__name__} "
                         f"({str(exc).splitlines()[0][:160]})") from exc
    missing = list(info.get("missing_keys", []))
    core = [k for k in missing if not k.startswith(OPTIONAL_HEADS)]
    if core:
        raise ModelError(
            f"model {spec.text!r}: {len(core)} weights of {type(model).__name__} are not in the "
            f"checkpoint (e.g. {core[0]}): it holds another architecture or tower"
        )
    return model, {k.split(".")[0] for k in missing}


def _tower(spec: ModelSpec, config: Any) -> str:
    tower = spec.options.get("tower")
    if tower not in (None, "image", "text"):
        raise ModelError(f"tower {tower!r} unknown for {spec.text}: use image or text")
    dual = hasattr(config, "vision_config") and hasattr(config, "text_config")
    if dual:
        if tower is None:
            raise ModelError(f"model {spec.text!r} is a dual encoder ({config.model_type}): "
                             "add ?tower=image or ?tower=text")
        return tower
    found = "image" if hasattr(config, "num_channels") else "text"
    if tower not in (None, found):
        raise ModelError(f"model {spec.text!r} is a {found} model ({config.model_type}): it has no {tower} tower")
    return found


def _model_class(spec: ModelSpec, config: Any, tower: str, projected: bool) -> tuple[Any, Any]:
    """AutoModel, or the one tower's class of a dual encoder (both towers would load otherwise),
    with the config to build it from (None: the checkpoint's own)."""
    import transformers
    from transformers import AutoModel
    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    sub = getattr(config, f"{'vision' if tower == 'image' else 'text'}_config", None)
    if sub is None:
        if projected:
            raise ModelError(f"{spec.text}: pooling=proj impossible, {config.model_type} is not a "
                             "CLIP-style dual encoder; use pooling=cls, mean or pooler")
        return AutoModel, None
    try:
        cls = MODEL_MAPPING[type(sub)]
    except KeyError:  # towers not in the auto tables (SigLIP's text tower): by class name
        cls = getattr(transformers, type(sub).__name__.replace("Config", "Model"), None)
        if cls is None:
            raise ModelError(f"model {spec.text!r}: transformers has no model class for its "
                             f"{type(sub).__name__}") from None
    if projected:
        plain, cls = cls, getattr(transformers, f"{cls.__name__}WithProjection", None)
        if cls is None:
            raise ModelError(f"{spec.text}: pooling=proj impossible, transformers has no "
                             f"{plain.__name__}WithProjection (SigLIP towers pool "
                             "into the joint space already: use pooling=pooler)")
        # The joint width lives in the dual config; the tower's own copy may hold a default.
        sub = copy.deepcopy(sub)
        sub.projection_dim = config.projection_dim
        return cls, sub
    return cls, None


def load_hf(spec: ModelSpec, device: torch.device, dtype: torch.dtype) -> Encoder:
    """The ``hf:`` backend: read the config, then build the image or the text encoder."""
    from transformers import AutoConfig

    _quiet()
    try:
        config = AutoConfig.from_pretrained(spec.name, trust_remote_code=_trust(spec))
    except (OSError, ValueError) as exc:
        raise hub_hint(spec, exc) from exc
    tower = _tower(spec, config)
    model_cls, tower_config = _model_class(spec, config, tower, spec.options.get("pooling") == "proj")
    if tower == "image":
        from .hf_vision_backend import HFImageEncoder

        return HFImageEncoder(spec, device, dtype, model_cls=model_cls, config=tower_config)
    return HFEncoder(spec, device, dtype, model_cls=model_cls, config=tower_config)


class HFEncoder(Encoder):
    """``hf:DIR_OR_NAME?pooling=mean|cls|pooler|proj&max_length=N`` for text: AutoModel +
    AutoTokenizer, or the text tower of a dual encoder loaded by its own class."""

    modality = "text"

    def __init__(self, spec: ModelSpec, device: torch.device, dtype: torch.dtype, *,
                 model_cls: Any = None, config: Any = None) -> None:
        super().__init__(spec, device, dtype)
        from transformers import AutoModel, AutoTokenizer

        _quiet()
        model_cls = model_cls or AutoModel
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(spec.name, trust_remote_code=_trust(spec))
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

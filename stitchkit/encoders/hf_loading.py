"""Loading Hugging Face checkpoints: which tower and class, safe ``from_pretrained``, one-line
errors. Shared by the text (:mod:`.hf_backend`) and image (:mod:`.hf_vision_backend`) encoders.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

from ..errors import ModelError
from .base import ModelSpec

# Heads whose weights a checkpoint may lack (an image classifier saved without ViT's pooler):
# missing there means "randomly initialised", so that pooling is refused; missing anywhere
# else means the checkpoint is not this architecture.
OPTIONAL_HEADS = ("pooler.", "head.", "visual_projection.", "text_projection.")


def quiet_transformers() -> None:
    """Loading bars and notices from transformers would drown the job's own progress lines."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def weight_files(path: str) -> list[Path]:
    root = Path(path)
    if not root.is_dir():
        return []
    return sorted(p for p in root.rglob("*") if p.suffix in (".safetensors", ".bin") and p.is_file())



def trust_remote_code(spec: ModelSpec) -> bool:
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
        model, info = model_cls.from_pretrained(spec.name, trust_remote_code=trust_remote_code(spec),
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


def pick_tower(spec: ModelSpec, config: Any) -> str:
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


def model_class(spec: ModelSpec, config: Any, tower: str, projected: bool) -> tuple[Any, Any]:
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

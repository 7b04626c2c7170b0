"""Encoders: one spec string resolves a model, its weights and its preprocessing.

Names are imported on first use, so that :mod:`stitchkit.encoders.specs` (which stores use to
compare spaces) loads without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "EncodeOutput": ".base", "Encoder": ".base", "ModelSpec": ".base",
    "MODELS": ".cards",
    "list_models": ".registry", "load_encoder": ".registry", "parse_spec": ".registry",
    "space_identity": ".specs",
    "check_spec": ".check",
}

__all__ = ["MODELS", "EncodeOutput", "Encoder", "ModelSpec", "check_spec", "list_models", "load_encoder",
           "parse_spec", "space_identity"]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

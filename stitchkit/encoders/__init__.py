"""Encoders: one spec string resolves a model, its weights and its preprocessing."""

from .base import EncodeOutput, Encoder, ModelSpec
from .registry import MODELS, list_models, load_encoder, parse_spec

__all__ = ["MODELS", "EncodeOutput", "Encoder", "ModelSpec", "list_models", "load_encoder", "parse_spec"]

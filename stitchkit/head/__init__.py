"""The cross-attention head: its module, the file-backed ``Head`` and its training loop."""

from .head import Head
from .model import CrossAttentionHead, HeadConfig, score_matrix
from .train import RunOptions, TrainConfig, TrainResult, train_head

__all__ = [
    "CrossAttentionHead", "Head", "HeadConfig", "RunOptions", "TrainConfig", "TrainResult", "score_matrix",
    "train_head",
]

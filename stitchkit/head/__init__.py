"""The cross-attention head: its module, the file-backed ``Head`` and its training loop."""

from .config import ComputeOptions, HeadConfig, TrainConfig
from .head import Head
from .model import CrossAttentionHead, ScoreBlocks, score_matrix
from .train import TrainResult, train_head

__all__ = [
    "ComputeOptions", "CrossAttentionHead", "Head", "HeadConfig", "ScoreBlocks", "TrainConfig", "TrainResult",
    "score_matrix", "train_head",
]

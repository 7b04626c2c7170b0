"""Zero-shot classification: prompts, the report standardiser, scoring and metrics.

>>> from stitchkit.zeroshot import classify_store, load_prompts       # doctest: +SKIP
>>> r = classify_store("k-lite2.h5", load_prompts("pneumonia"), text_model="minilm",
...                    head_path="head.st")                            # doctest: +SKIP
>>> r.metrics["auc"]["pneumonia"]                                      # doctest: +SKIP
"""

from .captions import CaptionSource, make_captions
from .metrics import auc, classification_metrics
from .prompt_cache import embed_prompts
from .prompts import PromptError, PromptSet, from_classes, load_prompts
from .scoring import ClassifyResult, classify_store
from .standardise import CommandStandardiser, RuleStandardiser, standardise

__all__ = [
    "CaptionSource", "ClassifyResult", "CommandStandardiser", "PromptError", "PromptSet", "RuleStandardiser",
    "auc", "classification_metrics", "classify_store", "embed_prompts", "from_classes", "load_prompts",
    "make_captions", "standardise",
]

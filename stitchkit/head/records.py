"""A head training's record (:mod:`stitchkit.results`): its validation figures, not its curve."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..results import RecordParts, flatten_metrics


def train_parts(result: dict[str, Any], command: dict[str, Any], dataset: str | None) -> RecordParts:
    metrics = flatten_metrics({"val": result.get("val") or {}, "best_epoch": result.get("best_epoch"),
                               "epochs_run": result.get("epochs_run"), "n_pairs": result.get("n_pairs")})
    # The curve lives in the head file's metadata, not in a table row.
    rest = {k: v for k, v in result.items() if k not in ("metrics", "history")}
    fields = {"dataset": dataset or (Path(result["path"]).stem if result.get("path") else None),
              "model": "cross-attention head", "pretrained": None}
    return RecordParts(fields, metrics, rest)

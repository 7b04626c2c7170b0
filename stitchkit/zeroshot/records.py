"""A classification's record (:mod:`stitchkit.results`): its data set, its route and its
metrics, from what :meth:`~stitchkit.zeroshot.scoring.ClassifyResult.to_dict` gives."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..label_use import NONE, label_use_of
from ..results import (
    RecordParts,
    dataset_of,
    flatten_metrics,
    map_header,
    model_label,
    route_label,
    with_label_use,
)


def classify_parts(result: dict[str, Any], command: dict[str, Any], dataset: str | None) -> RecordParts:
    """The record of a classification. A map the composition names lends its method and
    anchor count (read from the map file where the composition lacks them)."""
    composition = dict(result.get("composition") or {})
    query = composition.get("query") or {}
    n_anchors = None
    if composition.get("map"):
        header = map_header(composition["map"].get("path"))
        if header.get("method") and "method" not in composition["map"]:
            composition["map"] = {**composition["map"], "method": header["method"]}
        n_anchors = header.get("n_anchors")
    composition = with_label_use(composition)
    rest = {k: v for k, v in result.items() if k != "metrics"}
    rest.update(composition=composition, label_use="; ".join(label_use_of(composition)) or NONE)
    ids = (command.get("params") or {}).get("ids_file")
    if dataset is None and query.get("path"):
        # a subset named by an id file is a data set of its own (e.g. NIH's held-out patients)
        dataset = dataset_of(query["path"]) + (f" [{Path(ids).stem}]" if ids else "")
    fields = {"dataset": dataset, "model": route_label(composition), "model_spec": query.get("model_spec"),
              "model_label": model_label(query.get("model_spec")), "pretrained": query.get("weights_sha256")}
    if n_anchors is not None:
        fields["n_anchors"] = int(n_anchors)
    return RecordParts(fields, flatten_metrics(result.get("metrics") or {}), rest)

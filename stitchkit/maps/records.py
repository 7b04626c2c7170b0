"""What `stitch fit` and `stitch sweep` report: a fitted map's result and a sweep's, and their
records (:mod:`stitchkit.results`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..label_use import NONE, map_label_use
from ..results import RecordParts, dataset_of, flatten_metrics, model_label, scalar, store_attr
from .estimators import BaseMap


def fit_result(m: BaseMap, output: str | Path) -> dict[str, Any]:
    """A fitted map's result, as `stitch fit --json` prints it: where it was written, its method,
    spaces, widths, anchors and held-out metrics, and its penalty or scale where it has one."""
    result: dict[str, Any] = {
        "output": str(output), "method": m.method, "source": m.source_space_, "target": m.target_space_,
        "dims": [m.n_features_in_, m.n_features_out_], "anchors": m.anchors_, "metrics": m.metrics_,
    }
    if hasattr(m, "alpha_"):
        result.update(alpha=m.alpha_, alpha_relative=m.alpha_relative_)
    if m.method == "orthogonal":
        result["scale_factor"] = m.scale_
    return result


def sweep_result(summary: list[dict[str, Any]], table: str | Path, plot: str | Path | None) -> dict[str, Any]:
    """A sweep's result: its summary rows and the files written."""
    return {"table": str(table), "plot": str(plot) if plot else None, "summary": summary}


def _pair_label(source: str | None, target: str | None, method: str | None = None) -> str:
    return f"{model_label(source)} → {model_label(target)}" + (f" ({method})" if method else "")


def fit_parts(result: dict[str, Any], command: dict[str, Any], dataset: str | None) -> RecordParts:
    source, target = result.get("source") or {}, result.get("target") or {}
    rest = {k: v for k, v in result.items() if k != "metrics"}
    rest["composition"] = {"source": source, "target": target, "method": result.get("method"),
                           "map": result.get("output")}
    rest["label_use"] = map_label_use(result.get("anchors")) or NONE
    anchors = result.get("anchors") or {}
    fields = {"dataset": dataset or dataset_of(source.get("path")),
              "model": _pair_label(source.get("model_spec"), target.get("model_spec"), result.get("method")),
              "model_spec": source.get("model_spec"), "model_label": model_label(source.get("model_spec")),
              "pretrained": source.get("weights_sha256"),
              "n_anchors": anchors.get("n_refit") or anchors.get("n_fit")}
    return RecordParts(fields, flatten_metrics(result.get("metrics") or {}), rest)


def sweep_parts(result: dict[str, Any], command: dict[str, Any], dataset: str | None) -> RecordParts:
    metrics = {f"{row['method']}_n{row['n_anchors']}_{key}": scalar(value)
               for row in result.get("summary") or [] for key, value in row.items()
               if key.endswith(("_mean", "_std"))}
    params = command.get("params") or {}
    source, target = result.get("source") or params.get("source"), result.get("target") or params.get("target")
    rest = {k: v for k, v in result.items() if k != "metrics"}
    rest.update(source=source, target=target)
    spec = store_attr(source, "model_spec")
    fields = {"dataset": dataset or dataset_of(source),
              "model": _pair_label(spec, store_attr(target, "model_spec")) if spec else None,
              "pretrained": None}
    return RecordParts(fields, metrics, rest)

"""Results as flat records, after CLIP_benchmark's convention, and tables gathered from them.

CLIP_benchmark writes one JSON object per run: ``{"dataset", "model", "task", "metrics": {...}}``
with scalar metrics. stitchkit's records keep those four keys (so a table builder written for
CLIP_benchmark reads them), add ``composition`` (which spaces, map and head were stacked) and
``provenance`` (stitchkit version, time, command) and ``label_use`` (which labels the result
used: "none" for a zero-shot one; :mod:`stitchkit.label_use`), and keep the command's other keys
beside them. ``metrics`` is always flat: nested per-class values are joined with ``_``
(``auc_pneumonia``) and each 95 % interval becomes ``..._ci_low`` / ``..._ci_high``.

>>> rec = to_record("classify", {"n": 4, "classes": ["a"], "metrics": {"auc": {"a": 0.9}}})
>>> rec["task"], rec["metrics"]["auc_a"]
('zeroshot_classification', 0.9)
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .errors import UsageError
from .fileio import atomic_output
from .formats import SCORES_CSV
from .label_use import LABEL_USE_FIELD, NONE, head_meta_label_use, label_use_of, map_label_use

SCHEMA = "stitchkit.result/1"
# `stitch benchmark`'s benchmark.json: one run of a suite; its records are in records.json beside it
BENCHMARK_SCHEMA = "stitchkit.benchmark/1"
CURVE_SCHEMA = "stitchkit.learning-curve/1"  # examples/learning-curve/curve.py
# what each command's record is called in the "task" field (CLIP_benchmark names its own
# zero-shot task "zeroshot_classification"; the others are stitchkit's)
TASKS = {
    "classify": "zeroshot_classification",
    "fit": "map_fit",
    "sweep": "anchor_sweep",
    "head": "head_train",
}


def _scalar(value: Any) -> Any:
    """JSON-safe scalars: NaN and infinities become None (strict JSON has no NaN)."""
    if hasattr(value, "item"):  # numpy scalars
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def flatten_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """One level of scalar metrics; intervals in ``metrics["ci"]`` become ``_ci_low/_ci_high``."""
    flat: dict[str, Any] = {}

    def put(prefix: str, value: Any, suffix: str = "") -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                put(f"{prefix}_{k}" if prefix else str(k), v, suffix)
        elif isinstance(value, list | tuple) and len(value) == 2 and suffix == "_ci":
            flat[f"{prefix}_ci_low"], flat[f"{prefix}_ci_high"] = _scalar(value[0]), _scalar(value[1])
        elif isinstance(value, list | tuple):
            flat[prefix + suffix] = json.dumps([_scalar(v) for v in value])
        else:
            flat[prefix + suffix] = _scalar(value)

    for key, value in metrics.items():
        if key == "ci" and isinstance(value, dict):
            for k, v in value.items():
                if k in ("level", "n_boot"):
                    flat[f"ci_{k}"] = _scalar(v)
                else:
                    put(k, v, "_ci")
        else:
            put(key, value)
    return flat


def _dataset_of(path: str | None) -> str | None:
    """A store's data set name: the stem of the manifest or folder it was embedded from."""
    if not path:
        return None
    source = _attr(path, "input")  # None when the store was moved: its own name is the best guess
    return Path(source.rstrip("/")).stem if source else Path(path).stem


def _attr(path: str | None, key: str) -> str | None:
    """One attribute of a store, or None when the store is gone (a record read later)."""
    if not path:
        return None
    from .store import read_attr

    try:
        value = read_attr(path, key)
    except OSError:
        return None
    return None if value is None else str(value)


def _model_name(composition: dict[str, Any]) -> str:
    """``lite0 → lite2 (ridge) + head`` style name of a stacked route."""
    query = (composition.get("query") or {}).get("model_spec") or "?"
    parts = [str(query)]
    mapped = composition.get("map") or {}
    if mapped:
        target = (mapped.get("target") or {}).get("model_spec") or "?"
        method = mapped.get("method")
        parts.append(f"→ {target}" + (f" ({method})" if method else ""))
    head = composition.get("head") or {}
    if head:
        parts.append(f"+ head ({Path(head['path']).stem})" if head.get("path") else "+ head")
    else:
        text = (composition.get("prompts") or {}).get("model_spec")
        if text:
            parts.append(f"· cosine {text}")
    return " ".join(parts)


def _provenance(command: dict[str, Any] | None) -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        ver = version("stitchkit")
    except PackageNotFoundError:  # run from a source tree that was never installed
        ver = "unknown"
    out = {"stitchkit": ver, "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    if command:
        out.update(command)
    return out


def is_record(data: Any) -> bool:
    return isinstance(data, dict) and data.get("schema") == SCHEMA


def to_record(kind: str, result: dict[str, Any], *, command: dict[str, Any] | None = None,
              dataset: str | None = None) -> dict[str, Any]:
    """The flat record of one command's result (``kind``: classify, fit, sweep or head).

    ``command`` (e.g. ``{"command": "stitch fit", "params": {...}}``) goes into provenance.
    A record passes through unchanged, so converting twice is harmless.
    """
    if is_record(result):
        return result
    if kind not in TASKS:
        raise UsageError(f"unknown result kind {kind!r}; expected one of {', '.join(TASKS)}")
    rest = {k: v for k, v in result.items() if k != "metrics"}
    if kind == "classify":
        composition = result.get("composition") or {}
        query = composition.get("query") or {}
        if composition.get("map") and "method" not in composition["map"]:
            method = _map_method(composition["map"].get("path"))
            if method:
                composition = {**composition, "map": {**composition["map"], "method": method}}
        composition = _with_label_use(composition)
        rest["composition"] = composition
        rest["label_use"] = "; ".join(label_use_of(composition)) or NONE
        metrics = flatten_metrics(result.get("metrics") or {})
        ids = ((command or {}).get("params") or {}).get("ids_file")
        if dataset is None and query.get("path"):
            # a subset named by an id file is a data set of its own (e.g. NIH's held-out patients)
            dataset = _dataset_of(query["path"]) + (f" [{Path(ids).stem}]" if ids else "")
        record = {"dataset": dataset, "model": _model_name(composition),
                  "pretrained": query.get("weights_sha256")}
    elif kind == "fit":
        source, target = result.get("source") or {}, result.get("target") or {}
        rest["composition"] = {"source": source, "target": target, "method": result.get("method"),
                               "map": result.get("output")}
        rest["label_use"] = map_label_use(result.get("anchors")) or NONE
        metrics = flatten_metrics(result.get("metrics") or {})
        record = {"dataset": dataset or _dataset_of(source.get("path")),
                  "model": f"{source.get('model_spec')} → {target.get('model_spec')} ({result.get('method')})",
                  "pretrained": source.get("weights_sha256")}
    elif kind == "sweep":
        summary = result.get("summary") or []
        metrics = {}
        for row in summary:
            for key, value in row.items():
                if key.endswith(("_mean", "_std")):
                    metrics[f"{row['method']}_n{row['n_anchors']}_{key}"] = _scalar(value)
        params = (command or {}).get("params") or {}
        source, target = result.get("source") or params.get("source"), result.get("target") or params.get("target")
        rest.update(source=source, target=target)
        record = {"dataset": dataset or _dataset_of(source),
                  "model": (f"{_attr(source, 'model_spec')} → {_attr(target, 'model_spec')}"
                            if _attr(source, "model_spec") else None), "pretrained": None}
    else:  # head
        val = result.get("val") or {}
        metrics = flatten_metrics({"val": val, "best_epoch": result.get("best_epoch"),
                                   "epochs_run": result.get("epochs_run"), "n_pairs": result.get("n_pairs")})
        rest.pop("history", None)  # the curve lives in the head file's metadata, not in a table row
        record = {"dataset": dataset or (Path(result["path"]).stem if result.get("path") else None),
                  "model": "cross-attention head", "pretrained": None}
    return {"schema": SCHEMA, **record, "task": TASKS[kind], "metrics": metrics,
            **rest, "provenance": _provenance(command)}


def _with_label_use(composition: dict[str, Any]) -> dict[str, Any]:
    """``composition`` with the map's and the head's ``label_use`` where it lacks them (a
    result written before classifications recorded it): read from the map's and the head's
    file headers where those files are still where the composition says, else "unknown" (never
    "none": a zero-shot claim that nothing can back is not made)."""
    filled = dict(composition)
    for piece, label_use in (("map", _map_file_label_use), ("head", _head_file_label_use)):
        part = composition.get(piece)
        if part and LABEL_USE_FIELD not in part:
            found = label_use(part["path"]) if part.get("path") else _UNKNOWN
            if found is _UNKNOWN:
                found = f"unknown (not recorded, and {piece} file {part.get('path')} cannot be read)"
            filled[piece] = {**part, LABEL_USE_FIELD: found}
    return filled


_UNKNOWN = object()  # a file that cannot be read


def _header(path: str) -> dict[str, Any] | None:
    try:
        from .artifacts import read_header

        return read_header(path)
    except (OSError, ValueError, UsageError):
        return None


def _map_file_label_use(path: str) -> Any:
    header = _header(path)
    return _UNKNOWN if header is None else map_label_use(header.get("anchors"))


def _head_file_label_use(path: str) -> Any:
    # An ensemble's composition names its heads "a.head, b.head" (a path with ", " in it is
    # tried whole first).
    paths = [path] if Path(path).is_file() else path.split(", ")
    headers = [_header(p) for p in paths]
    if any(h is None for h in headers):
        return _UNKNOWN
    uses = list(dict.fromkeys(u for u in map(head_meta_label_use, headers) if u))
    return "; ".join(uses) or None


def _map_method(path: str | None) -> str | None:
    if not path:
        return None
    try:
        from .artifacts import read_header

        return read_header(path).get("method")
    except (OSError, ValueError, UsageError):
        return None


def guess_kind(data: dict[str, Any]) -> str | None:
    """Which command printed ``data`` (for JSON written before records existed)."""
    if is_record(data):
        return next((k for k, t in TASKS.items() if t == data.get("task")), None)
    if "classes" in data and "metrics" in data:
        return "classify"
    if "summary" in data and "table" in data:
        return "sweep"
    if "method" in data and "anchors" in data and "metrics" in data:
        return "fit"
    if "epochs_run" in data and "n_pairs" in data:
        return "head"
    return None


def load_records(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """Records from JSON files (records or raw command output); a sweep gives one per row."""
    records: list[dict[str, Any]] = []
    for path in paths:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UsageError(f"{path}: no such file; check the path") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise UsageError(f"{path} is not JSON ({exc}): give files that `--json` wrote") from None
        if isinstance(data, dict) and data.get("format") == SCORES_CSV.encoding_type:
            continue  # a score CSV's NAME.csv-metadata.json, caught by a `*.json`: not a result
        if isinstance(data, dict) and data.get("schema") == BENCHMARK_SCHEMA:
            continue  # `stitch benchmark`'s benchmark.json: its records are records.json beside it
        items = data if isinstance(data, list) else [data]
        for item in items:
            kind = guess_kind(item) if isinstance(item, dict) else None
            if kind is None:
                raise UsageError(f"{path}: not a stitchkit result (no task, metrics or summary); "
                                 "give files that `stitch fit|classify|sweep|head train --json` wrote")
            rec = to_record(kind, item)
            for row in sweep_rows(rec) if rec["task"] == TASKS["sweep"] else [rec]:
                records.append({**row, "file": str(path)})
    return records


def append_records(path: str | Path, records: list[dict[str, Any]]) -> Path:
    """Add ``records`` to the JSON list at ``path`` (created if missing), atomically; a record
    with the same suite, dataset and model as a new one is replaced, so a re-run does not repeat
    rows and runs of several models into one folder gather into one table."""
    path = Path(path)
    kept: list[dict[str, Any]] = []
    if path.is_file():
        try:
            kept = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise UsageError(f"{path} is not JSON ({exc}): move it away, or write elsewhere") from None
        if not isinstance(kept, list) or not all(is_record(r) for r in kept):
            raise UsageError(f"{path} is not a list of result records: move it away, or write elsewhere")

    def key(r: dict[str, Any]) -> tuple[Any, ...]:
        return r.get("suite"), r.get("dataset"), r.get("model")

    new = {key(r) for r in records}
    merged = [r for r in kept if key(r) not in new] + list(records)
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(merged, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return path


def sweep_rows(record: dict[str, Any]) -> list[dict[str, Any]]:
    """One record per (method, anchor count) of a sweep, so a sweep joins other runs' tables."""
    rows = []
    for row in record.get("summary") or []:
        metrics = {k: _scalar(v) for k, v in row.items() if k.endswith(("_mean", "_std"))}
        metrics.update(n_seeds=row.get("n_seeds"), n_failed=row.get("n_failed"))
        rows.append({"schema": SCHEMA, "dataset": record.get("dataset"),
                     "model": f"{record['model']} ({row['method']})" if record.get("model") else row["method"],
                     "task": record["task"], "method": row["method"], "n_anchors": row["n_anchors"],
                     "metrics": metrics, "error": row.get("error"), "provenance": record.get("provenance")})
    return rows


FIELDS = ("route", "command", "control_command", "dataset", "model", "task", "label_use", "method", "n_anchors", "pretrained",
          "file")


def table(records: list[dict[str, Any]], columns: list[str] | None = None) -> tuple[list[str], list[list[Any]]]:
    """(header, rows). A column is a record field (``FIELDS``) or a metric name.

    By default: route (when any record has one), dataset, model, task, label_use (when a
    record is a zero-shot classification, or used labels: the claim a zero-shot table makes),
    then every numeric metric seen, in first-seen order.
    """
    if columns is None:
        seen: dict[str, None] = {}
        for r in records:
            for k, v in r["metrics"].items():
                if not isinstance(v, str):
                    seen.setdefault(k, None)
        lead = ["route"] if any("route" in r for r in records) else []
        sweep = ["n_anchors"] if any("n_anchors" in r for r in records) else []
        labels = ["label_use"] if any(r.get("task") == TASKS["classify"] or r.get("label_use") not in (None, NONE)
                                      for r in records) else []
        columns = [*lead, "dataset", "model", "task", *labels, *sweep, *seen]
    known = set(FIELDS) | {k for r in records for k in r["metrics"]}
    unknown = [c for c in columns if c not in known]
    if unknown:
        raise UsageError(f"unknown column {', '.join(unknown)}: use a record field "
                         f"({', '.join(FIELDS)}) or a metric the records hold")
    rows = [[r["metrics"][c] if c in r["metrics"] and c not in FIELDS else r.get(c) for c in columns]
            for r in records]
    return list(columns), rows


def _cell(value: Any, digits: int) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def to_csv(header: list[str], rows: list[list[Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([["" if v is None else v for v in row] for row in rows])
    return buf.getvalue()


def to_markdown(header: list[str], rows: list[list[Any]], digits: int = 3) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v, digits).replace("|", "\\|") for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"

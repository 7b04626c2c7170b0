"""Results as flat records, after CLIP_benchmark's convention, and tables gathered from them.

CLIP_benchmark writes one JSON object per run: ``{"dataset", "model", "task", "metrics": {...}}``
with scalar metrics. stitchkit's records keep those four keys (so a table builder written for
CLIP_benchmark reads them), add ``composition`` (which spaces, map and head were stacked) and
``provenance`` (stitchkit version and commit, time, command) and ``label_use`` (which labels the result
used: "none" for a zero-shot one; :mod:`stitchkit.label_use`), and keep the command's other keys
beside them. ``metrics`` is always flat: nested per-class values are joined with ``_``
(``auc_pneumonia``) and each 95 % interval becomes ``..._ci_low`` / ``..._ci_high``.

>>> rec = to_record("classify", {"n": 4, "classes": ["a"], "metrics": {"auc": {"a": 0.9}}})
>>> rec["task"], rec["metrics"]["auc_a"]
('zeroshot_classification', 0.9)
"""

from __future__ import annotations

import csv
import importlib
import io
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .errors import UsageError
from .fileio import atomic_output
from .formats import BENCHMARK, RECORD, SCORES_CSV
from .label_use import LABEL_USE_FIELD, NONE, head_meta_label_use, map_label_use

SCHEMA = RECORD.schema
# `stitch benchmark`'s benchmark.json: one run of a suite; its records are in records.json beside it
BENCHMARK_SCHEMA = BENCHMARK.schema


@dataclass(frozen=True)
class RecordType:
    """How one command's result becomes a record: the record's ``task`` (CLIP_benchmark's name
    for a zero-shot classification, stitchkit's for the others), the keys the command's raw
    ``--json`` output always held (to read files written before records existed), and the
    function, ``module:name``, that gives the record's parts (:class:`RecordParts`)."""

    task: str
    keys: tuple[str, ...]
    parts: str

    def build(self, result: dict[str, Any], command: dict[str, Any], dataset: str | None) -> RecordParts:
        module, name = self.parts.split(":")
        return getattr(importlib.import_module(module), name)(result, command, dataset)


@dataclass
class RecordParts:
    """What a command's result gives its record: the leading fields (dataset, model, ...), the
    metrics (flat) and the rest of its keys."""

    fields: dict[str, Any]
    metrics: dict[str, Any]
    rest: dict[str, Any] = field(default_factory=dict)


#: Each command that writes records, and where its result's shape is known. Adding a command
#: that writes records is one line here and one function beside its result (docs/add-a-command.md).
RECORD_TYPES = {
    "classify": RecordType("zeroshot_classification", ("classes", "metrics"), "stitchkit.zeroshot.records:classify_parts"),
    "fit": RecordType("map_fit", ("method", "anchors", "metrics"), "stitchkit.maps.records:fit_parts"),
    "sweep": RecordType("anchor_sweep", ("summary", "table"), "stitchkit.maps.records:sweep_parts"),
    "head": RecordType("head_train", ("epochs_run", "n_pairs"), "stitchkit.head.records:train_parts"),
}
TASKS = {kind: t.task for kind, t in RECORD_TYPES.items()}


def scalar(value: Any) -> Any:
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
            flat[f"{prefix}_ci_low"], flat[f"{prefix}_ci_high"] = scalar(value[0]), scalar(value[1])
        elif isinstance(value, list | tuple):
            flat[prefix + suffix] = json.dumps([scalar(v) for v in value])
        else:
            flat[prefix + suffix] = scalar(value)

    for key, value in metrics.items():
        if key == "ci" and isinstance(value, dict):
            for k, v in value.items():
                if k in ("level", "n_boot", "unit", "n_groups"):  # unit: what was resampled (image, group)
                    flat[f"ci_{k}"] = scalar(v)
                else:
                    put(k, v, "_ci")
        else:
            put(key, value)
    return flat


def dataset_of(path: str | None) -> str | None:
    """A store's data set name: the stem of the manifest or folder it was embedded from."""
    if not path:
        return None
    source = store_attr(path, "input")  # None when the store was moved: its own name is the best guess
    return Path(source.rstrip("/")).stem if source else Path(path).stem


def store_attr(path: str | None, key: str) -> str | None:
    """One attribute of a store, or None when the store is gone (a record read later)."""
    if not path:
        return None
    from .store import read_attr

    try:
        value = read_attr(path, key)
    except OSError:
        return None
    return None if value is None else str(value)


def model_label(spec: str | None) -> str:
    """A model spec as a table names it: a short name as it is, ``backend:NAME?options`` as the
    last part of NAME (``timm:tf_efficientnet_b0?weights=/w/b0.pth`` → ``tf_efficientnet_b0``)."""
    if not spec:
        return "?"
    backend, sep, name = str(spec).split("?", 1)[0].partition(":")
    return (Path(name.rstrip("/")).name or name) if sep else backend


def route_label(composition: dict[str, Any]) -> str:
    """``lite0 → lite2 (ridge) + head`` style name of a stacked route."""
    query = (composition.get("query") or {}).get("model_spec")
    parts = [model_label(query)]
    mapped = composition.get("map") or {}
    if mapped:
        method = mapped.get("method")
        parts.append(f"→ {model_label((mapped.get('target') or {}).get('model_spec'))}"
                     + (f" ({method})" if method else ""))
    head = composition.get("head") or {}
    if head:
        parts.append(f"+ head ({Path(head['path']).stem})" if head.get("path") else "+ head")
    else:
        text = (composition.get("prompts") or {}).get("model_spec")
        if text:
            parts.append(f"· {'patch' if composition.get('patch') else 'cosine'} {model_label(text)}")
    return " ".join(parts)


def _provenance(command: dict[str, Any] | None) -> dict[str, Any]:
    from .provenance import code_provenance

    out = {**code_provenance(), "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    if command:
        out.update(command)
    return out


def is_record(data: Any) -> bool:
    return isinstance(data, dict) and data.get("schema") == SCHEMA


def to_record(kind: str, result: dict[str, Any], *, command: dict[str, Any] | None = None,
              dataset: str | None = None) -> dict[str, Any]:
    """The flat record of one command's result (``kind``: one of :data:`RECORD_TYPES`).

    ``command`` (e.g. ``{"command": "stitch fit", "params": {...}}``) goes into provenance; a
    ``name`` among its params (``--name``) names the record's ``route``. A record passes through
    unchanged, so converting twice is harmless.
    """
    if is_record(result):
        return result
    if kind not in RECORD_TYPES:
        raise UsageError(f"unknown result kind {kind!r}; expected one of {', '.join(RECORD_TYPES)}")
    record_type = RECORD_TYPES[kind]
    parts = record_type.build(result, command or {}, dataset)
    name = ((command or {}).get("params") or {}).get("name")
    return {"schema": SCHEMA, **({"route": name} if name else {}), **parts.fields, "task": record_type.task,
            "metrics": parts.metrics, **parts.rest, "provenance": _provenance(command)}


def with_label_use(composition: dict[str, Any]) -> dict[str, Any]:
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


def map_header(path: str | None) -> dict[str, Any]:
    """A map file's metadata, or {} when the file is gone or unreadable (a record read later)."""
    return (_header(path) or {}) if path else {}


def guess_kind(data: dict[str, Any]) -> str | None:
    """Which command printed ``data`` (for JSON written before records existed)."""
    if is_record(data):
        return next((k for k, t in RECORD_TYPES.items() if t.task == data.get("task")), None)
    return next((k for k, t in RECORD_TYPES.items() if all(key in data for key in t.keys)), None)


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
        metrics = {k: scalar(v) for k, v in row.items() if k.endswith(("_mean", "_std"))}
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

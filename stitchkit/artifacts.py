"""Maps and heads on disk: one safetensors file whose header carries JSON metadata.

No pickle anywhere: tensors are safetensors, everything else is JSON under the header key
``stitchkit``, with a ``kind`` (map | head | head-checkpoint: the encoding type) and a
``format_version``, each kind's own (``stitchkit.formats``), which :func:`read_header` checks,
and ``code``, the code that wrote it (:mod:`stitchkit.provenance`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UsageError
from .fileio import atomic_output
from .formats import ARTIFACTS, artifact_format, check_format
from .provenance import code_provenance

HEADER_KEY = "stitchkit"


def save_artifact(
    path: str | Path, kind: str, tensors: dict[str, np.ndarray], meta: dict[str, Any]
) -> Path:
    """Write tensors and JSON metadata atomically; ``meta`` must be JSON-serialisable.

    ``kind`` is one of ``stitchkit.formats.ARTIFACTS`` (map, head, head-checkpoint), whose
    current version the header records, with the code writing it (``code``:
    :func:`stitchkit.provenance.code_provenance`; a ``code`` in ``meta`` read from an older
    file is replaced)."""
    from safetensors.numpy import save_file

    header = {"kind": kind, "format_version": ARTIFACTS[kind].version, **meta, "code": code_provenance()}
    arrays = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    with atomic_output(path) as tmp:
        save_file(arrays, str(tmp), metadata={HEADER_KEY: json.dumps(header, default=_plain)})
    return Path(path)


def load_artifact(
    path: str | Path, kind: str | None = None
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Tensors and metadata of a file written by :func:`save_artifact`; checks its kind."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = Path(path)
    meta = read_header(path)
    if kind is not None and meta.get("kind") != kind:
        raise UsageError(f"{path} is a {meta.get('kind')} file, not a {kind}: check the argument order")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise UsageError(f"{path} is damaged ({exc}): fit or train it again") from exc
    return tensors, meta


def read_header(path: str | Path) -> dict[str, Any]:
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such file; check the path")
    try:
        with safe_open(str(path), framework="numpy") as fh:
            raw = (fh.metadata() or {}).get(HEADER_KEY)
    except (SafetensorError, OSError, ValueError) as exc:
        raise UsageError(
            f"{path} is not a stitchkit map or head (not a readable safetensors file): check the path"
        ) from exc
    if raw is None:
        raise UsageError(f"{path} is a safetensors file without stitchkit metadata: not a map or head")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}: its stitchkit metadata is not JSON ({exc}): fit or train it again") from None
    if not isinstance(meta, dict):
        raise UsageError(f"{path}: its stitchkit metadata is not a JSON object: fit or train it again")
    kind = meta.get("kind")
    if kind is None:
        raise UsageError(f"{path}: its stitchkit metadata names no kind: not a map or head")
    check_format(path, artifact_format(path, kind), meta.get("format_version"))
    return meta


def describe_artifact(path: str | Path) -> dict[str, Any]:
    from safetensors import safe_open

    meta = read_header(path)
    with safe_open(str(path), framework="numpy") as fh:
        shapes = {k: list(fh.get_slice(k).get_shape()) for k in fh.keys()}
    return {"path": str(path), **meta, "tensors": shapes}


def _plain(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")

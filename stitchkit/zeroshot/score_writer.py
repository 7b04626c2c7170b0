"""Score files: per-sample scores streamed to CSV or HDF5 (by suffix), appearing atomically,
and read back by :func:`read_scores` (the one reader: `stitch report`, `stitch info`); and the
per-class columns the metrics read back, spilled to a temporary folder while scoring.

Both forms carry an encoding type and a format version (``stitchkit.formats``): the HDF5 file
in its root attributes ``format`` (``stitchkit.scores``) and ``format_version``; the CSV, which
has nowhere to put them without upsetting CSV readers, in ``NAME.csv-metadata.json`` beside
it (the name W3C's CSV on the Web looks for), with ``format`` (``stitchkit.scores-csv``),
``format_version``, the CSV's ``columns``, ``classes`` and the run's ``meta``. Both name the
code that wrote them (``code``: :mod:`stitchkit.provenance`). A CSV without
that file (written before it existed, or copied alone) reads as version 1.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UsageError
from ..fileio import atomic_output, temporary_dir
from ..formats import SCORES_CSV, SCORES_H5, check_format
from ..provenance import code_provenance
from .metrics import Columns

_HDF5_MAGIC = b"\x89HDF"


def metadata_path(csv_path: str | os.PathLike) -> Path:
    """Where a score CSV's format, version and metadata are: ``NAME.csv-metadata.json``."""
    p = Path(csv_path)
    return p.with_name(p.name + "-metadata.json")


def is_score_metadata(data: Any) -> bool:
    """Whether parsed JSON is a score CSV's metadata file (not a result record)."""
    return isinstance(data, dict) and data.get("format") == SCORES_CSV.encoding_type


def predicted_names(probs: np.ndarray, classes: list[str], mode: str) -> list[str]:
    """Each sample's predicted class (multi-class: argmax) or findings (multi-label: p ≥ 0.5)."""
    if mode == "multiclass":
        return np.asarray(classes, dtype=object)[probs.argmax(axis=1)].tolist()
    return ["|".join(c for c, p in zip(classes, row, strict=True) if p >= 0.5) for row in probs]


class ScoreWriter:
    """Streams per-sample scores to CSV or HDF5 (by suffix), appearing atomically."""

    def __init__(self, path: Path, classes: list[str], meta: dict[str, Any], with_labels: bool,
                 mode: str = "multiclass"):
        self.path, self.classes, self.meta, self.with_labels = path, classes, meta, with_labels
        self.mode = mode
        self.closed = True  # until __enter__ has opened the file
        self.hdf5 = path.suffix.lower() in (".h5", ".hdf5")

    def __enter__(self) -> ScoreWriter:
        self._atomic = atomic_output(self.path)
        tmp = self._atomic.__enter__()
        if self.hdf5:
            import h5py

            from ..store.store import STR

            self._h5 = h5py.File(tmp, "w")
            c = len(self.classes)
            self._h5.create_dataset("ids", (0,), maxshape=(None,), dtype=STR, chunks=(4096,))
            self._h5.create_dataset("labels", (0,), maxshape=(None,), dtype=STR, chunks=(4096,))
            self._h5.create_dataset("scores", (0, c), maxshape=(None, c), dtype="f4", chunks=(4096, c))
            self._h5.create_dataset("logits", (0, c), maxshape=(None, c), dtype="f4", chunks=(4096, c))
            self._h5.attrs["format"] = SCORES_H5.encoding_type
            self._h5.attrs["format_version"] = SCORES_H5.version
            self._h5.attrs["classes"] = json.dumps(self.classes)
            self._h5.attrs["meta"] = json.dumps(self.meta, default=str)
            self._h5.attrs["code"] = json.dumps(code_provenance())
            self._n = 0
        else:
            self._fh = open(tmp, "w", newline="", encoding="utf-8")
            self._csv = csv.writer(self._fh)
            # Probabilities per class, then the scores metrics rank by (log-odds or logit
            # differences) as "score:<class>": probabilities alone round to 0 or 1 and tie.
            head = ["id", *(["label"] if self.with_labels else []), *self.classes,
                    *(f"score:{c}" for c in self.classes), "predicted"]
            self._csv.writerow(head)
            self._columns = head
        self.closed = False
        return self

    def write(self, ids: np.ndarray, labels: np.ndarray | None, logits: np.ndarray, probs: np.ndarray
              ) -> None:
        if self.hdf5:
            a, b = self._n, self._n + len(ids)
            for name in ("ids", "labels", "scores", "logits"):
                self._h5[name].resize(b, axis=0)
            self._h5["ids"][a:b] = np.asarray(ids, dtype=object)
            self._h5["labels"][a:b] = np.asarray(labels if labels is not None else [""] * len(ids), dtype=object)
            self._h5["scores"][a:b] = probs
            self._h5["logits"][a:b] = logits
            self._n = b
            return
        predicted = predicted_names(probs, self.classes, self.mode)  # the HDF5 file has no such column
        buf = io.StringIO()
        w = csv.writer(buf)
        for i in range(len(ids)):
            row = [ids[i], *([labels[i]] if self.with_labels else []),
                   *(f"{p:.9g}" for p in probs[i]), *(f"{z:.9g}" for z in logits[i]), predicted[i]]
            w.writerow(row)
        self._fh.write(buf.getvalue())

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: object) -> None:
        self.closed = True
        try:
            if self.hdf5:
                self._h5.close()
            else:
                self._fh.close()  # flushes the last rows: a full disk often fails only here
                if exc_type is None:  # before the CSV appears: no CSV without its version
                    self._write_metadata()
        except BaseException as failure:
            # The temporary is broken: never move it into place over earlier scores.
            self._atomic.__exit__(type(failure), failure, failure.__traceback__)
            raise
        self._atomic.__exit__(exc_type, exc, tb)

    def _write_metadata(self) -> None:
        data = {"format": SCORES_CSV.encoding_type, "format_version": SCORES_CSV.version,
                "table": self.path.name, "columns": self._columns, "classes": self.classes,
                "mode": self.mode, "meta": self.meta, "code": code_provenance()}
        with atomic_output(metadata_path(self.path)) as tmp:
            tmp.write_text(json.dumps(data, indent=1, default=str) + "\n", encoding="utf-8")


# -- reading ----------------------------------------------------------------------------------

@dataclass
class ScoreFile:
    """A score file read back: one row per sample, one column per class."""

    path: Path
    format_version: int
    classes: list[str]
    ids: list[str]
    labels: list[str] | None  # None: the store had no labels
    probabilities: np.ndarray  # (n, classes)
    ranking: np.ndarray  # (n, classes): what the AUC ranks by (log-odds or logit differences)
    predicted: list[str] | None  # the CSV's column; the HDF5 form has none
    meta: dict[str, Any]  # the run's: mode, scoring, prompts, composition


def _is_hdf5(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(4) == _HDF5_MAGIC


def _strings(values: np.ndarray) -> list[str]:
    return [x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x) for x in values]


def _h5_header(h5: Any, path: Path) -> int:
    if h5.attrs.get("format") != SCORES_H5.encoding_type:
        raise UsageError(f"{path} is an HDF5 file but not a score file (no format = {SCORES_H5.encoding_type}): "
                         "give what `stitch classify -o NAME.h5` wrote")
    return check_format(path, SCORES_H5, h5.attrs.get("format_version"))


def _csv_header(path: Path) -> tuple[int, list[str], dict[str, Any]]:
    """(format version, columns, metadata) of a score CSV, its version checked."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            columns = next(csv.reader(fh), [])
    except (UnicodeDecodeError, csv.Error) as exc:
        raise UsageError(f"{path} is not a readable CSV ({exc}): give what `stitch classify -o` wrote") from None
    meta_file = metadata_path(path)
    data: dict[str, Any] = {}
    if meta_file.is_file():
        try:
            data = json.loads(meta_file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise UsageError(f"{meta_file} cannot be parsed ({exc}): delete it or classify again") from None
        if not is_score_metadata(data):
            raise UsageError(f"{meta_file} is not a score file's metadata (no format = "
                             f"{SCORES_CSV.encoding_type}): delete or rename it")
    version = check_format(path, SCORES_CSV, data.get("format_version"))
    if not {"id", "predicted"} <= set(columns):
        raise UsageError(f"{path} is not a score file (it needs the columns id and predicted): "
                         "give what `stitch classify -o` wrote")
    if data.get("columns") is not None and data["columns"] != columns:
        raise UsageError(f"{meta_file} describes another table than {path} (the columns differ): "
                         "delete it, or classify again")
    return version, columns, data


def _classes(columns: list[str]) -> list[str]:
    return [c for c in columns if c not in ("id", "label", "predicted") and not c.startswith("score:")]


def check_scores(path: str | os.PathLike) -> int:
    """The format version of the score file at ``path``, checked, reading only its header."""
    path = Path(path)
    if _is_hdf5(path):
        import h5py

        with h5py.File(path, "r") as h5:
            return _h5_header(h5, path)
    return _csv_header(path)[0]


def read_scores(path: str | os.PathLike) -> ScoreFile:
    """A score file of `stitch classify` (CSV or HDF5, told apart by content), its format
    version checked: one this stitchkit does not read is refused in one line.

    The ranking scores are what `stitch classify` ranks by for its AUC ("score:<class>" columns,
    log-odds or logit differences; the HDF5 form's logits): probabilities alone round to 0 or 1
    and tie. Probabilities draw the histograms and the calibration curve.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such file; check the path")
    if _is_hdf5(path):
        import h5py

        with h5py.File(path, "r") as h5:
            version = _h5_header(h5, path)
            classes = json.loads(h5.attrs["classes"])
            meta = json.loads(h5.attrs.get("meta", "{}"))
            ids = _strings(h5["ids"][:])
            labels = _strings(h5["labels"][:])
            probs = np.asarray(h5["scores"][:], dtype=np.float64)
            ranking = np.asarray(h5["logits"][:], dtype=np.float64) if "logits" in h5 else probs
        return ScoreFile(path, version, classes, ids, labels if any(labels) else None, probs, ranking,
                         None, meta)
    version, columns, data = _csv_header(path)
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    classes = _classes(columns)
    probs = np.array([[float(r[c]) for c in classes] for r in rows]).reshape(len(rows), len(classes))
    if all(f"score:{c}" in columns for c in classes):
        ranking = np.array([[float(r[f"score:{c}"]) for c in classes] for r in rows]).reshape(probs.shape)
    else:
        ranking = probs
    labels = [r["label"] for r in rows] if "label" in columns else None
    return ScoreFile(path, version, classes, [r["id"] for r in rows], labels, probs, ranking,
                     [r["predicted"] for r in rows], dict(data.get("meta") or {}))


def describe_scores(path: str | os.PathLike) -> dict[str, Any]:
    """What `stitch info` shows of a score file, without reading its scores."""
    path = Path(path)
    if _is_hdf5(path):
        import h5py

        with h5py.File(path, "r") as h5:
            version = _h5_header(h5, path)
            classes = json.loads(h5.attrs["classes"])
            meta = json.loads(h5.attrs.get("meta", "{}"))
            code = json.loads(h5.attrs.get("code", "null"))
            n = int(h5["ids"].shape[0])
        return {"kind": "score file (HDF5)", "path": str(path), "format_version": version,
                "samples": n, "classes": classes, "code": code,
                **({"meta": meta} if meta else {})}
    version, columns, data = _csv_header(path)
    with open(path, newline="", encoding="utf-8") as fh:
        n = sum(1 for _ in csv.reader(fh)) - 1
    meta = data.get("meta") or {}
    return {"kind": "score file (CSV)", "path": str(path), "format_version": version, "samples": n,
            "classes": _classes(columns), "labels": "label" in columns,
            "metadata": str(metadata_path(path)) if data else "none (version 1)",
            "code": data.get("code"), **({"meta": meta} if meta else {})}


class ScoreSpill(Columns):
    """The samples the metrics use, spilled class by class while they are scored.

    Exact AUC needs every sample's score, but one class at a time: each block's ranking
    scores (float32, what the score file holds) are appended to one file per class (and,
    multi-label, the predictions to one per class), so memory holds only each sample's label
    code (int32) and, multi-class, its predicted class (int16). The metrics read a class back
    with ``np.fromfile``: O(N) memory for one class, never (N, C). The files sit in a
    temporary folder (beside the output when there is one) removed by :meth:`close`.
    """

    def __init__(self, table: Any, n_classes: int, mode: str, capacity: int,
                 folder: Path | None = None) -> None:
        self._table = table  # () -> (distinct labels, C) bool: truth of each label code
        self.n_classes, self.mode, self.n = n_classes, mode, 0
        # Named after host and pid: a later run removes the folders of runs killed mid-way.
        self._dir = temporary_dir(folder, ".stitch-metrics-")
        self._codes = np.empty(capacity, dtype=np.int32)
        self._top = np.empty(capacity if mode == "multiclass" else 0,
                             dtype=np.int16 if n_classes < 2**15 else np.int32)
        self._files = {(kind, c): open(self._path(kind, c), "wb")  # noqa: SIM115 - closed in finish()
                       for c in range(n_classes)
                       for kind in (("rank",) if mode == "multiclass" else ("rank", "pred"))}

    def _path(self, kind: str, c: int) -> Path:
        return self._dir / f"{kind}-{c}.bin"

    def add(self, codes: np.ndarray, rank: np.ndarray, probs: np.ndarray) -> None:
        """One block of kept samples: label codes (k,), ranking scores and probabilities (k, C)."""
        a, b = self.n, self.n + len(codes)
        if b > len(self._codes):  # more samples than announced: grow (amortised)
            size = max(b, 2 * len(self._codes))
            self._codes = np.resize(self._codes, size)
            if self.mode == "multiclass":
                self._top = np.resize(self._top, size)
        self._codes[a:b] = codes
        for c, column in enumerate(np.ascontiguousarray(rank.T, dtype=np.float32)):
            column.tofile(self._files["rank", c])
        if self.mode == "multiclass":
            self._top[a:b] = probs.argmax(axis=1)
        else:
            for c, column in enumerate(np.ascontiguousarray((probs >= 0.5).T)):
                column.tofile(self._files["pred", c])
        self.n = b

    def finish(self) -> None:
        for fh in self._files.values():
            fh.close()
        self._codes, self._top = self._codes[:self.n], self._top[:self.n]
        self._truth = np.asarray(self._table(), dtype=bool)

    def truth(self, c: int) -> np.ndarray:
        return self._truth[:, c][self._codes]

    def rank(self, c: int) -> np.ndarray:
        return np.fromfile(self._path("rank", c), dtype=np.float32)

    def pred(self, c: int) -> np.ndarray:
        if self.mode == "multiclass":
            return self._top == c
        return np.fromfile(self._path("pred", c), dtype=bool)

    def correct(self) -> np.ndarray:
        if self.mode == "multiclass":
            return self._truth[self._codes, self._top].astype(np.float64)
        right = np.zeros(self.n, dtype=np.int32)  # classes called right, per sample
        for c in range(self.n_classes):
            right += self.pred(c) == self.truth(c)
        return right / float(self.n_classes)  # == the mean over classes, exactly

    def close(self) -> None:
        for fh in self._files.values():
            fh.close()
        shutil.rmtree(self._dir, ignore_errors=True)

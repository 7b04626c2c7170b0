"""Per-sample scores streamed to CSV or HDF5 (by suffix), appearing atomically; and the
per-class columns the metrics read back, spilled to a temporary folder while scoring.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from ..fileio import atomic_output, temporary_dir
from .metrics import Columns


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
            self._h5.attrs["format"] = "stitchkit.scores"
            self._h5.attrs["classes"] = json.dumps(self.classes)
            self._h5.attrs["meta"] = json.dumps(self.meta, default=str)
            self._n = 0
        else:
            self._fh = open(tmp, "w", newline="", encoding="utf-8")
            self._csv = csv.writer(self._fh)
            # Probabilities per class, then the scores metrics rank by (log-odds or logit
            # differences) as "score:<class>": probabilities alone round to 0 or 1 and tie.
            head = ["id", *(["label"] if self.with_labels else []), *self.classes,
                    *(f"score:{c}" for c in self.classes), "predicted"]
            self._csv.writerow(head)
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
        except BaseException as failure:
            # The temporary is broken: never move it into place over earlier scores.
            self._atomic.__exit__(type(failure), failure, failure.__traceback__)
            raise
        self._atomic.__exit__(exc_type, exc, tb)


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

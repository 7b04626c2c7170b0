"""Per-sample scores streamed to CSV or HDF5 (by suffix), appearing atomically.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from ..fileio import atomic_output


class ScoreWriter:
    """Streams per-sample scores to CSV or HDF5 (by suffix), appearing atomically."""

    def __init__(self, path: Path, classes: list[str], meta: dict[str, Any], with_labels: bool):
        self.path, self.classes, self.meta, self.with_labels = path, classes, meta, with_labels
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
        return self

    def write(self, ids: np.ndarray, labels: np.ndarray | None, logits: np.ndarray, probs: np.ndarray,
              predicted: list[str]) -> None:
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
        buf = io.StringIO()
        w = csv.writer(buf)
        for i in range(len(ids)):
            row = [ids[i], *([labels[i]] if self.with_labels else []),
                   *(f"{p:.9g}" for p in probs[i]), *(f"{z:.9g}" for z in logits[i]), predicted[i]]
            w.writerow(row)
        self._fh.write(buf.getvalue())

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: object) -> None:
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

"""The steps of run.sh's stitched-token-head levers that have no CLI option (library calls).

Usage:
  python levers.py no-resample HEAD OUT            # HEAD without its token grid: queries scored
                                                   #   on their own grid (lever (a) off)
  python levers.py head IMG TXT OUT D C JSON       # run.sh's Kermany token head with token
                                                   #   dropout D (lever (e)) and each batch's 9x9
                                                   #   grid passed through 7x7 and back with
                                                   #   probability C (lever (f)) in training
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path


def no_resample(head: str, out: str) -> None:
    from stitchkit.head import Head

    h = Head.load(head)
    h.meta_.pop("image_token_count", None)  # as a head written before grids were recorded
    h.save(out)


def train(images: str, texts: str, out: str, dropout: float, coarsen: float, record: str) -> None:
    from stitchkit.head import ComputeOptions, HeadConfig, TrainConfig, train_head

    # run.sh's Kermany heads ($HK): every setting pinned to what docs/head.md's levers table was
    # measured with, the head before commit cfd1632 changed the defaults (v1: no cosine residual,
    # PyTorch's init, no dropout, no floor on the steps, validation after every epoch with early
    # stopping after 3 without a better loss); tests/test_docs_consistency.py checks the pins.
    cfg = TrainConfig(
        head=HeadConfig(width=64, layers=1, heads=4, dropout=0.0, residual=False, init="torch"),
        lr=1e-3, weight_decay=0.01, warmup=0.05, min_steps=0,
        batch_size=64, epochs=10, candidates=10, patience=3, val_fraction=0.1,
        token_dropout=dropout, token_coarsen=coarsen)
    result = train_head(images, texts, out=out, config=replace(cfg, seed=0), run=ComputeOptions(threads=1))
    Path(record).write_text(json.dumps(result.to_dict(), indent=2) + "\n")


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    if cmd == "no-resample":
        no_resample(*args)
    elif cmd == "head":
        train(args[0], args[1], args[2], float(args[3]), float(args[4]), args[5])
    else:
        raise SystemExit(__doc__)

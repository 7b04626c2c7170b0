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
from pathlib import Path


def no_resample(head: str, out: str) -> None:
    from stitchkit.head import Head

    h = Head.load(head)
    h.meta_.pop("image_token_count", None)  # as a head written before grids were recorded
    h.save(out)


def train(images: str, texts: str, out: str, dropout: float, coarsen: float, record: str) -> None:
    from stitchkit.head import HeadConfig, TrainConfig, train_head

    # run.sh's Kermany heads: --batch-size 64 --epochs 10 --patience 3 --seed 0 --threads 1,
    # every other setting the CLI's default.
    cfg = TrainConfig(head=HeadConfig(), epochs=10, batch_size=64, patience=3,
                      token_dropout=dropout, token_coarsen=coarsen)
    result = train_head(images, texts, out=out, config=cfg, seed=0, threads=1)
    Path(record).write_text(json.dumps(result.to_dict(), indent=2) + "\n")


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    if cmd == "no-resample":
        no_resample(*args)
    elif cmd == "head":
        train(args[0], args[1], args[2], float(args[3]), float(args[4]), args[5])
    else:
        raise SystemExit(__doc__)

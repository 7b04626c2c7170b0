"""A Lite0 → Lite2 map fitted on spatially matched tokens (optionally with the pooled pairs).

Lite0's last feature map is 7×7, Lite2's 9×9; Lite2's map is area-resampled to 7×7 so that
token t of both covers the same part of the image, and each (image, position) is one anchor
pair: 1,500 images give 73,500 pairs. The map is affine like any other, so it still commutes
with mean pooling and applies to globals and tokens alike.
Usage: python token_map.py SRC_LITE0_TOK.h5 TGT_LITE2_TOK.h5 OUT.map [--with-pooled]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from stitchkit.maps import fit_map
from stitchkit.maps.tokens import read_tokens
from stitchkit.store import EmbeddingStore, StoreWriter


def token_store(src: EmbeddingStore, out: Path, side: int, with_pooled: bool, block: int = 64) -> Path:
    """One row per (image, grid position) of ``src`` resampled to side×side (plus the globals)."""
    attrs = {k: v for k, v in src.attrs.items() if k in ("modality", "model_spec", "weights_sha256")}
    with StoreWriter(out, dim=src.dim, attrs=attrs) as w:
        for a in range(0, len(src), block):
            rows = np.arange(a, min(a + block, len(src)))
            tok, _ = read_tokens(src, rows)
            n, t, d = tok.shape
            g = int(round(t ** 0.5))
            grid = torch.from_numpy(tok).reshape(n, g, g, d).permute(0, 3, 1, 2)
            grid = torch.nn.functional.adaptive_avg_pool2d(grid, side).permute(0, 2, 3, 1).reshape(n, -1, d)
            ids = [f"{i}#{p}" for i in src.ids[rows] for p in range(side * side)]
            w.append(ids, grid.reshape(-1, d).numpy().astype(np.float32))
            if with_pooled:
                w.append([f"{i}#pooled" for i in src.ids[rows]], src.read(rows))
    return out


def main(source: str, target: str, out: str, with_pooled: bool) -> None:
    with tempfile.TemporaryDirectory(dir=Path(out).parent) as tmp, \
            EmbeddingStore(source) as s, EmbeddingStore(target) as t:
        side = int(round(s.token_shape[0] ** 0.5))
        a = token_store(s, Path(tmp) / "src.h5", side, with_pooled)
        b = token_store(t, Path(tmp) / "tgt.h5", side, with_pooled)
        m = fit_map(a, b, method="ridge", metrics=False)
        m.save(out)
        print(f"{out}: ridge on {len(s) * side * side} token pairs ({side}x{side})"
              + (f" + {len(s)} pooled pairs" if with_pooled else "") + f", alpha {getattr(m, 'alpha_', None)}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], "--with-pooled" in sys.argv[4:])

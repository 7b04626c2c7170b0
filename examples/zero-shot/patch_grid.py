"""Patch scoring's settings on one store through one map (chain), AUC of pneumonia, in memory.

Reads the store's globals and patch tokens once, maps them (`stitch classify`'s path: the map
applied per token), and scores every pooling / temperature / weight of the grid with the
library's own functions (`stitchkit.zeroshot.patches`), against cosine scoring. The AUC of two
classes ranks by the difference of the class logits, as `stitch classify`'s log-odds do, so each
cell equals `stitch classify ... --scoring patch --patch-pooling P --patch-temperature T
--patch-weight W` (checked for several cells in docs/head.md). It chose the default temperature
on Kermany *train* images, never on a test set:

    python examples/zero-shot/patch_grid.py demo-out/k-train-lite2.h5 demo-out/covid-lite2-to-minilm.map --every 5
    python examples/zero-shot/patch_grid.py demo-out/k-train-lite0.h5 \\
        demo-out/lite0-to-lite2.tokens.map+demo-out/covid-lite2-to-minilm.map --every 5
"""

from __future__ import annotations

import argparse

import numpy as np
from sklearn.metrics import roc_auc_score

from stitchkit.maps import load_map
from stitchkit.maps import tokens as T
from stitchkit.maps.adapt import MapChain
from stitchkit.store import EmbeddingStore
from stitchkit.zeroshot import patches as P
from stitchkit.zeroshot.prompt_cache import embed_prompts
from stitchkit.zeroshot.prompts import load_prompts

GRID = [("mean", [1.0]), ("max", [1.0]), ("lse", [0.02, 0.07, 0.2, 0.5, 1.0]),
        ("attention", [0.02, 0.07, 0.2, 0.5, 1.0, 2.0])]
WEIGHTS = (1.0, 0.75, 0.5, 0.25)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store", help="a token store with labels normal / pneumonia")
    parser.add_argument("maps", help="the map into the text space, or MAP+MAP: applied one after the other")
    parser.add_argument("--every", type=int, default=1, help="every k-th row of the store (1: all)")
    args = parser.parse_args()
    chain = MapChain([load_map(m) for m in args.maps.split("+")])
    prompts = load_prompts("pneumonia")
    text = embed_prompts(prompts.texts(), text_model="minilm")
    index = {t: i for i, t in enumerate(text.texts)}
    unit = P._unit(text.glob)
    classes = P._unit(np.stack([unit[[index[t] for t in c.positive]].mean(axis=0) for c in prompts.classes]))
    with EmbeddingStore(args.store) as store:
        rows = np.arange(0, len(store), args.every)
        y = np.array([str(v) in ("pneumonia", "bacteria", "virus") for v in store.labels[rows]])
        glob, tokens, masks = [], [], []
        for a in range(0, len(rows), 256):
            block = rows[a:a + 256]
            tok, mask = store.read_tokens(block)
            glob.append(chain.transform(store.read(block)).astype(np.float32))
            tokens.append(T.map_tokens(chain, tok, mask))
            masks.append(mask)
    glob, tokens, mask = np.concatenate(glob), np.concatenate(tokens), np.concatenate(masks)
    print(f"{args.store}: {len(rows)} images ({int(y.sum())} pneumonia), {tokens.shape[1]} tokens each")
    cosine = P._unit(glob).astype(np.float64) @ classes.astype(np.float64).T
    print(f"cosine                 {roc_auc_score(y, cosine[:, 1] - cosine[:, 0]):.4f}")
    sims = P.token_similarities(tokens, mask, classes)
    side = int(round(np.sqrt(tokens.shape[1])))
    if side * side == tokens.shape[1] and mask.all():  # where on the grid the most similar token lies
        ring = np.ones((side, side), dtype=bool)
        ring[1:-1, 1:-1] = False
        ring = ring.reshape(-1)
        for c, cls in enumerate(prompts.classes):
            top = sims[:, :, c].argmax(axis=1)
            print(f"{cls.name}: token cosine {sims[:, ring, c].mean():.3f} on the grid's outer ring, "
                  f"{sims[:, ~ring, c].mean():.3f} inside; the most similar token on the ring in "
                  f"{100 * ring[top].mean():.0f} % of images (the ring is {100 * ring.mean():.0f} % of the cells)")
    for pooling, taus in GRID:
        for tau in taus:
            pooled = P.pool(sims, mask, pooling, tau, tokens, classes)
            cells = []
            for w in WEIGHTS:
                z = w * pooled + (1 - w) * cosine
                cells.append(f"w={w}: {roc_auc_score(y, z[:, 1] - z[:, 0]):.4f}")
            print(f"{pooling:9} tau={tau:<5}  " + "  ".join(cells), flush=True)


if __name__ == "__main__":
    main()

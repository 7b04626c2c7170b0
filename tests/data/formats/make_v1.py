"""Write the version-1 files that tests/test_formats.py keeps reading, one of each on-disk kind.

Run ONCE, with the stitchkit whose formats are all at version 1 (it was run before the
format checks moved to ``stitchkit/formats.py``)::

    python tests/data/formats/make_v1.py

and NEVER again after a change: the point of these files is that they were written by an
older stitchkit, and every later stitchkit must still read them (a change that breaks that
is a format change: raise the version in ``stitchkit/formats.py`` and keep the v1 reader).
When a kind reaches version 2, add ``make_v2.py`` beside this one and a ``v2/`` folder; leave
``v1/`` as it is.

The files are small (a few KB each) and synthetic, but written by the real writers:

    store.h5.gz    an image store: 24 rows, dim 8, 4 patch tokens of width 8, labels, groups,
                   one failed input                                    (StoreWriter)
    map.map        a ridge map from store.h5 (dim 8) to a dim-6 space   (fit_map + save)
    head.head      a tiny cross-attention head (width 4, 1 layer, 1 attention head), image
                   dim 8 with tokens, text dim 6                        (train_head)
    head.ckpt      the checkpoint of a head run stopped after epoch 1 of 2 (train_head)
    scores.csv     2 classes, 24 rows, the head's scores                 (ScoreWriter)
    scores.h5.gz   the same scores as HDF5                               (ScoreWriter)
    export/        store.h5 as a clip-retrieval folder                   (export_store)
    expected.json  what the readers must give back: ids, checksums, a map's and a head's
                   output on fixed inputs, the scores

The two HDF5 files are kept gzipped, byte for byte (HDF5's preallocated chunks make them
hundreds of KB of zeros); the tests unpack them into a temporary folder.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
OUT = HERE / "v1"
N, DIM, T, TEXT_DIM = 24, 8, 4, 6
CLASSES = ["normal", "pneumonia"]


class _Stop(Exception):
    pass


def main() -> None:
    from stitchkit.export import export_store
    from stitchkit.head import Head
    from stitchkit.head.config import ComputeOptions, HeadConfig, TrainConfig
    from stitchkit.head.train import checkpoint_path, train_head
    from stitchkit.maps import AnchorPlan, fit_map, load_map
    from stitchkit.store.store import StoreWriter, base_attrs, write_store
    from stitchkit.zeroshot.score_writer import ScoreWriter

    if OUT.exists():
        sys.exit(f"{OUT} exists: these files must never be rewritten (see the docstring)")
    rng = np.random.default_rng(21)
    ids = [f"img-{i:02d}" for i in range(N)]
    labels = [CLASSES[i % 2] for i in range(N)]
    groups = [f"patient-{i // 2:02d}" for i in range(N)]
    emb = rng.standard_normal((N, DIM)).astype(np.float32)
    tokens = rng.standard_normal((N, T, DIM)).astype(np.float16)
    mask = np.ones((N, T), dtype=bool)
    mixing = rng.standard_normal((DIM, TEXT_DIM))
    target = (emb @ mixing + 0.05 * rng.standard_normal((N, TEXT_DIM))).astype(np.float32)
    captions = [f"a chest x-ray, {label}" for label in labels]
    caption_vec = {c: rng.standard_normal(TEXT_DIM).astype(np.float32) for c in sorted(set(captions))}

    work = Path(tempfile.mkdtemp(prefix="make-v1-"))
    cwd = os.getcwd()
    os.chdir(work)  # relative paths, so the headers name no temporary folder
    try:
        attrs = base_attrs(modality="image", model_spec="synthetic-image", weights_sha256="0" * 64,
                           dim=DIM, input="make_v1.py", shard="",
                           preprocessing=json.dumps({"mode": "RGB", "input_size": [3, 8, 8]}))
        with StoreWriter("store.h5", dim=DIM, attrs=attrs, columns=["labels", "groups"],
                         token_shape=(T, DIM)) as w:
            w.append(ids, emb, columns={"labels": labels, "groups": groups}, tokens=tokens, tokens_mask=mask)
            w.add_failed([("img-broken", "cannot identify image file")])
        write_store("target.h5", ids, target, attrs={"modality": "image", "model_spec": "synthetic-target",
                                                     "weights_sha256": "1" * 64, "dim": TEXT_DIM})
        write_store("captions.h5", ids, np.stack([caption_vec[c] for c in captions]),
                    attrs={"modality": "text", "model_spec": "synthetic-text", "weights_sha256": "2" * 64,
                           "dim": TEXT_DIM, "captions": "labels"},
                    columns={"texts": captions, "labels": labels})

        m = fit_map("store.h5", "target.h5", "ridge", plan=AnchorPlan(holdout=0.25, seed=0))
        m.save("map.map")

        cfg = TrainConfig(head=HeadConfig(width=4, layers=1, heads=1, ffn_mult=1), epochs=1,
                          batch_size=8, val_fraction=0.0)
        train_head("store.h5", "captions.h5", out="head.head", config=replace(cfg, seed=0))

        def stop(record: dict) -> None:
            raise _Stop

        cfg2 = TrainConfig(head=HeadConfig(width=4, layers=1, heads=1, ffn_mult=1), epochs=2,
                           batch_size=8, val_fraction=0.0)
        try:
            train_head("store.h5", "captions.h5", out="stopped.head", config=replace(cfg2, seed=0), run=ComputeOptions(on_epoch=stop))
        except _Stop:
            pass
        checkpoint_path(Path("stopped.head")).rename("head.ckpt")

        head = Head.load("head.head")
        prompts = np.stack([caption_vec[f"a chest x-ray, {c}"] for c in CLASSES])
        logits = head.score(emb, prompts, tokens.astype(np.float32), mask)
        z = logits - logits.max(axis=1, keepdims=True)
        probs = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        ranking = logits - logits[:, ::-1]  # two classes: logit differences, as classify ranks
        meta = {"mode": "multiclass", "scoring": "head", "prompts": "synthetic",
                "composition": {"head": "head.head"}}
        for name in ("scores.csv", "scores.h5"):
            with ScoreWriter(Path(name), CLASSES, meta, True, "multiclass") as sw:
                sw.write(np.asarray(ids), np.asarray(labels), ranking.astype(np.float32),
                         probs.astype(np.float32))

        export_store("store.h5", "export")

        mapped = load_map("map.map").transform(emb[:3].astype(np.float64))
        expected = {
            "ids": ids, "labels": labels, "groups": groups, "failed": [["img-broken", "cannot identify image file"]],
            "embeddings_sum": float(emb.astype(np.float64).sum()),
            "tokens_sum": float(tokens.astype(np.float64).sum()),
            "map": {"method": "ridge", "input": emb[:3].tolist(), "output": mapped.tolist()},
            "head": {"config": cfg.head.to_dict(), "image": emb[:3].tolist(), "image_tokens": tokens[:3].astype(
                np.float32).tolist(), "texts": prompts.tolist(), "logits": logits[:3].tolist()},
            "checkpoint": {"epoch": 1},
            "scores": {"classes": CLASSES, "probabilities": probs.astype(np.float32).tolist(),
                       "ranking": ranking.astype(np.float32).tolist()},
        }
        Path("expected.json").write_text(json.dumps(expected, indent=1) + "\n", encoding="utf-8")

        OUT.mkdir(parents=True)
        for name in ("map.map", "head.head", "head.ckpt", "scores.csv", "expected.json"):
            shutil.copy2(name, OUT / name)
        for name in ("store.h5", "scores.h5"):
            with open(name, "rb") as src, gzip.GzipFile(OUT / f"{name}.gz", "wb", mtime=0) as dst:
                shutil.copyfileobj(src, dst)
        shutil.copytree("export", OUT / "export")
    finally:
        os.chdir(cwd)
        shutil.rmtree(work, ignore_errors=True)
    for p in sorted(OUT.rglob("*")):
        if p.is_file():
            print(f"{p.relative_to(HERE)}  {p.stat().st_size} bytes")


if __name__ == "__main__":
    main()

"""Training that suits few and many pairs: the step budget, adapted batches, the residual to
cosine and its selection, sentence stores, and pairs from several sources."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from stitchkit.errors import UsageError
from stitchkit.head import Head, HeadConfig, TrainConfig, train_head
from stitchkit.head.stream import balanced_order, batch_bounds
from stitchkit.head.train import batch_for, load_pairs
from stitchkit.store import write_store

SMALL = HeadConfig(width=16, heads=2)


def _pairs(d: Path, n: int, seed: int, prefix: str = "s", noise: float = 0.3) -> tuple[Path, Path]:
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 6)).astype(np.float32)
    lift = np.random.default_rng(99)  # one pair of spaces for every source
    x = z @ lift.normal(size=(6, 24)).astype(np.float32) + noise * rng.normal(size=(n, 24)).astype(np.float32)
    y = z @ lift.normal(size=(6, 16)).astype(np.float32) + noise * rng.normal(size=(n, 16)).astype(np.float32)
    ids = [f"{prefix}{i:03d}" for i in range(n)]
    groups = [f"p{i // 2}" for i in range(n)]  # two images per patient
    img = write_store(d / f"{prefix}-img.h5", ids, x, columns={"groups": groups},
                      attrs={"modality": "image", "model_spec": "img"})
    txt = write_store(d / f"{prefix}-txt.h5", ids, y, attrs={"modality": "text", "model_spec": "txt"})
    return img, txt


def test_batches_and_the_step_budget_suit_the_number_of_pairs() -> None:
    assert batch_for(195, 128) == 24 and batch_for(4694, 128) == 128 and batch_for(40, 128) == 16
    assert batch_for(10, 128) == 10
    assert batch_bounds(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert batch_bounds(9, 4) == [(0, 4), (4, 9)]  # one row left over joins the batch before


def test_a_small_set_trains_for_the_minimum_steps(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    img, txt = _pairs(tmp_path, 60, 0)
    cfg = TrainConfig(head=SMALL, epochs=2, min_steps=40, batch_size=128)
    result = train_head(img, txt, out=tmp_path / "h.st", config=cfg)
    training = Head.load(tmp_path / "h.st").meta_["training"]
    # 54 training pairs in batches of 16: 4 steps an epoch (the last of 6), 10 epochs for 40 steps.
    assert (training["batch_size"], training["steps"], result.epochs_run) == (16, 40, 10)
    assert training["val_split"] == "by group"


def test_the_residual_head_keeps_its_start_unless_validation_prefers_training(tmp_path: Path) -> None:
    """A head that can only overfit (pure-noise pairs beyond the cosine route's linear part)
    is kept where validation says: never worse than its starting point on the held-out loss."""
    torch.set_num_threads(1)
    img, txt = _pairs(tmp_path, 120, 1, noise=1.0)
    cfg = TrainConfig(head=SMALL, epochs=12, min_steps=0, batch_size=32, val_fraction=0.25, lr=3e-3)
    result = train_head(img, txt, out=tmp_path / "h.st", config=cfg)
    head = Head.load(tmp_path / "h.st")
    start = head.meta_["training"]["residual_map"]
    assert start["method"] == "ridge" and start["n_pairs"] == result.n_pairs  # every pair, held-out ones too
    checked = [h["val_loss"] for h in result.history if h["epoch"] in (3, 6, 9, 12)]
    assert result.val["val_loss"] <= min(checked) + 1e-4
    if result.best_epoch == 0:  # the start kept: the correction is still exactly zero
        assert float(head.module_.i2t_logit.weight.abs().max()) == 0.0


def test_sentence_store_pairs_each_image_with_its_sentences(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    img, _ = _pairs(tmp_path, 40, 4)
    ids, owner = [], []
    for i in range(40):
        for k in range(1 + i % 3):  # one to three sentences an image
            ids.append(f"s{i:03d}#{k}")
            owner.append(f"s{i:03d}")
    sentences = {k: rng.normal(size=16).astype(np.float32) for k in range(5)}
    which = [(i + k) % 5 for i in range(40) for k in range(1 + i % 3)]
    txt = write_store(tmp_path / "sent.h5", ids, np.stack([sentences[w] for w in which]),
                      columns={"image": owner}, attrs={"modality": "text", "model_spec": "txt", "pairs_by": "image"})
    pairs = load_pairs([(img, txt)], TrainConfig(head=SMALL))
    assert len(pairs.img) == 40 and len(pairs.sentences.rows) == len(ids)
    # Image s002 owns sentences 2, 3, 4: texts with those keys are all its positives.
    i = list(pairs.img.ids).index("s002")
    assert sorted(pairs.txt.ids[pairs.sentences.of(i)]) == ["s002#0", "s002#1", "s002#2"]
    own = set(pairs.keys.own[i][pairs.keys.own[i] >= 0])
    assert len(own) == 3
    drawn = pairs.sentences.draw(np.random.default_rng(0))
    assert all(str(pairs.txt.ids[r]).split("#")[0] == str(pairs.img.ids[n]) for n, r in enumerate(drawn))
    result = train_head(img, txt, out=tmp_path / "h.st", config=TrainConfig(head=SMALL, epochs=2, min_steps=0))
    assert Head.load(tmp_path / "h.st").meta_["training"]["n_texts"] == len(ids) and result.n_pairs == 40


def test_pairs_from_two_sources_are_balanced_and_never_share_a_patient(tmp_path: Path) -> None:
    a = _pairs(tmp_path, 30, 5, prefix="a")
    b = _pairs(tmp_path, 90, 6, prefix="b")
    pairs = load_pairs([a, b], TrainConfig(head=SMALL))
    assert len(pairs.img) == 120 and set(pairs.sources) == {0, 1}
    assert not set(pairs.img.groups[pairs.tr_rows]) & set(pairs.img.groups[pairs.va_rows])
    order = balanced_order(pairs.sources[pairs.tr_rows], seed=0, epoch=0)
    counts = np.bincount(pairs.sources[pairs.tr_rows][order])
    assert counts[0] == counts[1]  # the smaller source comes round again
    # Reading through both stores gives what each store holds.
    from stitchkit.store import EmbeddingStore

    with EmbeddingStore(a[0]) as sa, EmbeddingStore(b[0]) as sb:
        expect = np.concatenate([sa.read(np.arange(30)), sb.read(np.arange(90))])
    np.testing.assert_array_equal(pairs.img.read_glob(np.arange(120)), expect)
    result = train_head(*a, out=tmp_path / "h.st", more_pairs=[b],
                        config=TrainConfig(head=SMALL, epochs=1, min_steps=0))
    assert [p["n_images"] for p in Head.load(tmp_path / "h.st").meta_["inputs"]["pairs"]] == [30, 90]
    assert result.n_pairs == 120


def test_sources_in_other_spaces_are_refused(tmp_path: Path) -> None:
    a = _pairs(tmp_path, 30, 5, prefix="a")
    x = np.ones((20, 24), np.float32)
    other = write_store(tmp_path / "o.h5", [f"o{i}" for i in range(20)], x,
                        attrs={"modality": "image", "model_spec": "another-model"})
    with pytest.raises(UsageError, match="another-model|differ"):
        load_pairs([a, (other, a[1])], TrainConfig(head=SMALL))

"""Head training's streaming loader: every row once per epoch, the same batches for the same seed,
read in the stores' order; heads trained from the stream equal heads trained from memory, twice,
and a run resumed within an epoch equals an uninterrupted one; bf16 trains float32 heads.

The loader's logic runs on small synthetic stores (fast); the heads on the real Lite2 token store
of 180 Kermany images (``lite2_token_store``) with MiniLM word-token captions.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from stitchkit.artifacts import load_artifact
from stitchkit.errors import UsageError
from stitchkit.head import ComputeOptions, HeadConfig, TrainConfig, train_head
from stitchkit.head.data import LazyRows, Side, read_side
from stitchkit.head.stream import BatchSpec, Prefetch, Shuffle, batch_bounds, batches, epoch_order
from stitchkit.head.train import Trainer, checkpoint_path, load_pairs
from stitchkit.store import EmbeddingStore, StoreWriter
from stitchkit.store.store import base_attrs

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """300 pairs: images with 9 tokens of 24, texts with up to 5 word tokens of 16 (padded)."""
    d = tmp_path_factory.mktemp("stream")
    rng = np.random.default_rng(0)
    n, ids = 300, [f"s{i:03d}" for i in range(300)]
    z = rng.normal(size=(n, 6)).astype(np.float32)
    tok = (z[:, None, :] @ rng.normal(size=(6, 24))).astype(np.float32) + rng.normal(size=(n, 9, 24))
    with StoreWriter(d / "i.h5", dim=24, attrs=base_attrs(model_spec="img", modality="image"),
                     token_shape=(9, 24)) as w:
        w.append(ids, tok.mean(axis=1).astype(np.float32), tokens=tok, tokens_mask=np.ones((n, 9), bool))
    mask = np.ones((n, 5), bool)
    mask[::3, 3:] = False
    with StoreWriter(d / "t.h5", dim=16, attrs=base_attrs(model_spec="txt", modality="text"),
                     token_shape=(5, 16)) as w:  # the same ids in reverse order: joined by id
        w.append(ids[::-1], (z @ rng.normal(size=(6, 16))).astype(np.float32)[::-1],
                 tokens=rng.normal(size=(n, 5, 16))[::-1], tokens_mask=mask[::-1])
    return d / "i.h5", d / "t.h5"


SHUFFLES = [Shuffle(1, 1), Shuffle(4, 8), Shuffle(16, 64), Shuffle(16, 1024), Shuffle(7, 21)]


@pytest.mark.parametrize("shuffle", SHUFFLES, ids=lambda s: f"{s.block}x{s.buffer}")
@pytest.mark.parametrize("n", [1, 5, 64, 203])
def test_every_row_once_per_epoch_and_the_same_order_for_the_same_seed(n: int, shuffle: Shuffle) -> None:
    a = epoch_order(n, shuffle, seed=3, epoch=2)
    assert np.array_equal(np.sort(a), np.arange(n))
    assert np.array_equal(a, epoch_order(n, shuffle, seed=3, epoch=2))
    if n > 16:
        assert not np.array_equal(a, epoch_order(n, shuffle, seed=4, epoch=2))
        assert not np.array_equal(a, epoch_order(n, shuffle, seed=3, epoch=3))


def test_order_is_blocks_then_windows() -> None:
    """Rows of one window come from whole blocks; up to the buffer it is numpy's permutation."""
    order = epoch_order(1000, Shuffle(10, 100), seed=0, epoch=0)
    for a in range(0, 1000, 100):
        blocks = np.unique(order[a:a + 100] // 10)
        assert len(blocks) == 10  # ten whole blocks of ten consecutive rows
    plain = np.random.default_rng([0, 0]).permutation(500)
    assert np.array_equal(epoch_order(500, Shuffle(16, 1024), seed=0, epoch=0), plain)


def _sides(image: Path, text: Path) -> tuple[Side, Side]:
    from stitchkit.head.data import join_pairs

    return join_pairs(read_side(EmbeddingStore(image), tokens=True), read_side(EmbeddingStore(text), tokens=True))


def _in_memory(side: Side) -> Side:
    rows = np.arange(len(side))
    return replace(side, glob=np.asarray(side.glob[rows]), tokens=np.asarray(side.tokens[rows]))


@pytest.mark.parametrize("batch_size", [7, 32])
def test_batches_hold_every_row_once_and_equal_reads_from_memory(synthetic: tuple[Path, Path],
                                                                 batch_size: int) -> None:
    img, txt = _sides(*synthetic)
    assert isinstance(img.glob, LazyRows) and isinstance(txt.tokens, LazyRows)
    order = epoch_order(len(img), Shuffle(4, 24), seed=1, epoch=0)
    spec = BatchSpec(batch_size, True, True, CPU, buffer=24)
    streamed = list(batches(img, txt, order, spec))
    held = list(batches(_in_memory(img), _in_memory(txt), order, spec))
    rows = np.concatenate([b.rows for b in streamed])
    # Every row once, none dropped: the last batch takes the rest (a single row joins the one before).
    assert len(streamed) == -(-len(img) // batch_size) - (len(img) % batch_size == 1)
    assert len(np.unique(rows)) == len(rows) == len(img)
    assert np.array_equal(rows, order)
    assert all(len(b.rows) >= 2 for b in streamed)
    for s, h in zip(streamed, held, strict=True):
        for a, b in zip((*s.image, *s.text), (*h.image, *h.text), strict=True):
            assert torch.equal(a, b)
        assert s.image[1].dtype == torch.float16 and s.image[2].dtype == torch.bool  # as stored
        # The pairing holds: both sides of a batch are the rows of the same ids.
        np.testing.assert_array_equal(s.image[0].numpy(), img.glob[s.rows])
        np.testing.assert_array_equal(s.text[0].numpy(), txt.glob[s.rows])
    # Starting at a step gives the same batches from there (how a resumed epoch reads).
    later = list(batches(img, txt, order, spec, start=3))
    assert all(np.array_equal(a.rows, b.rows) for a, b in zip(later, streamed[3:], strict=True))


def test_prefetch_runs_in_a_named_thread_and_passes_errors_on() -> None:
    seen = []

    def source():
        seen.append(threading.current_thread().name)
        yield from range(10)

    with Prefetch(source(), depth=2) as loader:
        assert list(loader) == list(range(10))
    assert seen == ["stitch-loader"]

    def broken():
        yield 1
        raise ValueError("disk gone")

    with pytest.raises(ValueError, match="disk gone"), Prefetch(broken(), depth=2) as loader:
        list(loader)
    # Leaving early stops the thread even while it waits on a full queue.
    with Prefetch(iter(range(1000)), depth=1) as loader:
        next(iter(loader))
    assert not any(t.name == "stitch-loader" for t in threading.enumerate())


CFG = TrainConfig(min_steps=0, head=HeadConfig(width=16, heads=2, dropout=0.1), epochs=3, batch_size=16, lr=3e-3,
                  patience=10, token_dropout=0.2, shuffle_block=4, shuffle_buffer=32)


def _state(path: Path) -> dict[str, np.ndarray]:
    return load_artifact(path, "head")[0]


def _same_heads(a: Path, b: Path) -> None:
    ta, tb = _state(a), _state(b)
    assert sorted(ta) == sorted(tb)
    for k in ta:
        np.testing.assert_array_equal(ta[k], tb[k], err_msg=k)


@pytest.mark.slow
def test_streamed_head_equals_the_head_from_memory_and_itself(synthetic: tuple[Path, Path], tmp_path: Path, torch_threads) -> None:
    torch_threads(1)
    train_head(*synthetic, out=tmp_path / "a.head", config=replace(CFG, seed=5))
    train_head(*synthetic, out=tmp_path / "b.head", config=replace(CFG, seed=5))
    _same_heads(tmp_path / "a.head", tmp_path / "b.head")
    pairs = load_pairs([synthetic], replace(CFG, seed=5))
    pairs.img, pairs.txt = _in_memory(pairs.img), _in_memory(pairs.txt)
    trainer = Trainer(pairs, replace(CFG, seed=5), ComputeOptions(), tmp_path / "m.head")
    trainer.fit(None, None)
    trainer.finish()
    _same_heads(tmp_path / "a.head", tmp_path / "m.head")
    train_head(*synthetic, out=tmp_path / "c.head", config=replace(CFG, seed=6))
    assert not np.array_equal(_state(tmp_path / "a.head")["image_proj.weight"],
                              _state(tmp_path / "c.head")["image_proj.weight"])


@pytest.mark.slow
def test_a_run_stopped_within_an_epoch_resumes_to_the_same_head(synthetic: tuple[Path, Path],
                                                                 tmp_path: Path, torch_threads) -> None:
    """Checkpoints after every step (checkpoint_seconds=0); stopped in epoch 2 at step 5 by an
    error in the loop, then resumed: the head equals an uninterrupted run's."""
    torch_threads(1)
    every_step = ComputeOptions(checkpoint_every=0.0)
    train_head(*synthetic, out=tmp_path / "ref.head", config=replace(CFG, seed=2), run=every_step)
    calls = []
    steps_per_epoch = len(batch_bounds(len(load_pairs([synthetic], replace(CFG, seed=2)).tr_rows), CFG.batch_size))

    def stop(done: int, total: int) -> None:
        calls.append(done)
        if done == steps_per_epoch + 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_head(*synthetic, out=tmp_path / "h.head", config=replace(CFG, seed=2), run=replace(every_step, progress=stop))
    header = load_artifact(checkpoint_path(tmp_path / "h.head"), "head-checkpoint")[1]
    assert (header["epoch"], header["step"]) == (1, 4)  # written after step 4; step 5 was running
    result = train_head(*synthetic, out=tmp_path / "h.head", config=replace(CFG, seed=2), run=every_step)
    assert result.resumed_from == 1
    _same_heads(tmp_path / "ref.head", tmp_path / "h.head")
    assert not checkpoint_path(tmp_path / "h.head").exists()


def test_bf16_on_the_cpu_trains_and_saves_float32(synthetic: tuple[Path, Path], tmp_path: Path, torch_threads) -> None:
    torch_threads(1)
    cfg = replace(CFG, epochs=1, precision="bf16")
    result = train_head(*synthetic, out=tmp_path / "bf16.head", config=replace(cfg, seed=0))
    assert (result.device, result.precision) == ("cpu", "bf16")
    tensors, meta = load_artifact(tmp_path / "bf16.head", "head")
    weights = {k: v for k, v in tensors.items() if not k.startswith("fitted_on.")}  # id hashes: uint64
    assert weights and all(v.dtype == np.float32 for v in weights.values())
    assert np.isfinite(result.history[0]["train_loss"]) and np.isfinite(result.val["val_loss"])
    assert meta["config"]["precision"] == "bf16"
    assert (meta["training"]["device"], meta["training"]["precision"]) == ("cpu", "bf16")
    fp32 = train_head(*synthetic, out=tmp_path / "fp32.head", config=replace(replace(cfg, precision="fp32"), seed=0))
    # Same batches and initialisation; only the arithmetic's precision differs.
    assert abs(result.history[0]["train_loss"] - fp32.history[0]["train_loss"]) < 0.1


def test_bad_shuffle_and_precision_settings_are_one_line() -> None:
    with pytest.raises(UsageError, match="multiple of the shuffle block"):
        TrainConfig(shuffle_block=16, shuffle_buffer=100)
    with pytest.raises(UsageError, match="precision"):
        TrainConfig(precision="fp8")


@pytest.mark.slow
def test_real_token_store_streams_to_the_same_head(lite2_token_store: Path, lite2_token_captions: Path,
                                                   tmp_path: Path, torch_threads) -> None:
    """Lite2's 81 tokens x 1280 and MiniLM's word tokens, read window by window (windows of 32
    rows, blocks of 8): the same seed gives the same head from the stream twice, and the
    head equals one trained on the same pairs held in memory."""
    torch_threads(2)
    cfg = TrainConfig(min_steps=0, head=HeadConfig(width=16, heads=2), epochs=2, batch_size=16, shuffle_block=8,
                      shuffle_buffer=32, token_dropout=0.25, token_coarsen=0.5)
    for name in ("a", "b"):
        train_head(lite2_token_store, lite2_token_captions, out=tmp_path / f"{name}.head", config=replace(cfg, seed=0))
    _same_heads(tmp_path / "a.head", tmp_path / "b.head")
    pairs = load_pairs([(lite2_token_store, lite2_token_captions)], cfg)
    assert pairs.img.tokens.shape[1:] == (81, 1280)
    pairs.img, pairs.txt = _in_memory(pairs.img), _in_memory(pairs.txt)
    trainer = Trainer(pairs, cfg, ComputeOptions(), tmp_path / "m.head")
    trainer.fit(None, None)
    trainer.finish()
    _same_heads(tmp_path / "a.head", tmp_path / "m.head")

"""Head training on synthetic paired stores: learning, determinism, resume, round trip."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from stitchkit.errors import UsageError
from stitchkit.head import ComputeOptions, Head, HeadConfig, TrainConfig, train_head
from stitchkit.head.train import checkpoint_path, contrastive_loss, positives
from stitchkit.store import EmbeddingStore, write_store

N = 400


@pytest.fixture(scope="module")
def paired(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Images and texts that share a latent code: a pairing a head can learn."""
    rng = np.random.default_rng(0)
    z = rng.normal(size=(N, 8)).astype(np.float32)
    x = z @ rng.normal(size=(8, 48)).astype(np.float32) + 0.3 * rng.normal(size=(N, 48)).astype(np.float32)
    y = z @ rng.normal(size=(8, 32)).astype(np.float32) + 0.3 * rng.normal(size=(N, 32)).astype(np.float32)
    ids = [f"s{i:04d}" for i in range(N)]
    d = tmp_path_factory.mktemp("paired")
    img = write_store(d / "img.h5", ids, x, attrs={"modality": "image", "model_spec": "synthetic-image"})
    # The text store lists the same ids in another order: pairs are joined by id, not position.
    txt = write_store(d / "txt.h5", ids[::-1], y[::-1], attrs={"modality": "text", "model_spec": "synthetic-text"})
    return img, txt


# Without the residual, dropout or N(0, 0.02) weights: these tests watch the attention learn a
# pairing from scratch within 90 steps.
CFG = TrainConfig(min_steps=0, head=HeadConfig(width=32, heads=2, residual=False, init="torch", dropout=0.0), epochs=8, batch_size=32, lr=3e-3, patience=10)


@pytest.mark.slow
def test_learns_a_pairing_and_round_trips(paired: tuple[Path, Path], tmp_path: Path, torch_threads) -> None:
    torch_threads(1)
    img, txt = paired
    out = tmp_path / "head.st"
    result = train_head(img, txt, out=out, config=replace(CFG, seed=0))
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < 0.5 * losses[0]
    assert result.val["i2t_top1"] > 10 * result.val["chance_top1"]
    assert result.val["t2i_top1"] > 10 * result.val["chance_top1"]
    # Training draws nothing and leaves matplotlib's backend alone; the curve comes from the
    # returned history.
    assert result.plot is None and not out.with_name(out.name + ".loss.png").exists()
    from stitchkit.report.loss_plot import plot_loss

    png = plot_loss(result.history, tmp_path / "loss.png")
    assert png is not None and png.read_bytes()[:4] == b"\x89PNG"
    assert not checkpoint_path(out).exists()

    head = Head.load(out)
    assert head.image_space_["model_spec"] == "synthetic-image"
    assert head.text_space_["model_spec"] == "synthetic-text"
    with EmbeddingStore(img) as si, EmbeddingStore(txt) as st:
        x, y = si.read(np.arange(20)), st.read(st.index_of(list(si.ids[:20])))
    s1 = head.score(x, y)
    head.save(tmp_path / "again.st")
    s2 = Head.load(tmp_path / "again.st").score(x, y)
    np.testing.assert_array_equal(s1, s2)
    # Trained pairs: the diagonal wins its row for most of these samples.
    assert (s1.argmax(axis=1) == np.arange(20)).mean() > 0.5


@pytest.mark.slow
def test_seed_determinism_and_resume(paired: tuple[Path, Path], tmp_path: Path, torch_threads) -> None:
    torch_threads(1)
    img, txt = paired
    cfg = TrainConfig(min_steps=0, head=HeadConfig(width=16, heads=2), epochs=3, batch_size=64, patience=10)
    a = train_head(img, txt, out=tmp_path / "a.st", config=replace(cfg, seed=3))

    class Stop(Exception):
        pass

    def stop_after_first(record: dict) -> None:
        if record["epoch"] == 1:
            raise Stop

    with pytest.raises(Stop):
        train_head(img, txt, out=tmp_path / "b.st", config=replace(cfg, seed=3),
                   run=ComputeOptions(on_epoch=stop_after_first))
    assert checkpoint_path(tmp_path / "b.st").exists()
    assert not (tmp_path / "b.st").exists()
    b = train_head(img, txt, out=tmp_path / "b.st", config=replace(cfg, seed=3))
    assert b.resumed_from == 1
    ta, tb = Head.load(tmp_path / "a.st"), Head.load(tmp_path / "b.st")
    for (ka, va), (kb, vb) in zip(ta.module_.state_dict().items(), tb.module_.state_dict().items(), strict=True):
        assert ka == kb
        torch.testing.assert_close(va, vb, msg=f"{ka} differs after resume")
    # Another seed gives another head.
    c = train_head(img, txt, out=tmp_path / "c.st", config=replace(cfg, seed=4))
    assert c.history[-1]["train_loss"] != a.history[-1]["train_loss"]


def test_resume_refuses_a_checkpoint_of_other_settings(paired: tuple[Path, Path], tmp_path: Path) -> None:
    img, txt = paired
    cfg = TrainConfig(min_steps=0, head=HeadConfig(width=16, heads=2), epochs=2, batch_size=64)

    def boom(record: dict) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_head(img, txt, out=tmp_path / "h.st", config=replace(cfg, seed=0), run=ComputeOptions(on_epoch=boom))
    with pytest.raises(UsageError, match="other inputs, settings or seed"):
        train_head(img, txt, out=tmp_path / "h.st", config=replace(cfg, seed=1))


def test_resume_is_keyed_on_the_whole_data(paired: tuple[Path, Path], tmp_path: Path) -> None:
    """A checkpoint made from a store whose last row differs is refused (not just the first 64)."""
    img, txt = paired
    cfg = TrainConfig(min_steps=0, head=HeadConfig(width=16, heads=2), epochs=2, batch_size=64)

    def boom(record: dict) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_head(img, txt, out=tmp_path / "h.st", config=replace(cfg, seed=0), run=ComputeOptions(on_epoch=boom))
    with EmbeddingStore(img) as s:
        ids, x = list(s.ids), s.read()
        attrs = {"modality": "image", "model_spec": "synthetic-image"}
    x[-1] += 1.0
    changed = write_store(tmp_path / "img-changed.h5", ids, x, attrs=attrs)
    with pytest.raises(UsageError, match="other inputs, settings or seed"):
        train_head(changed, txt, out=tmp_path / "h.st", config=replace(cfg, seed=0))


def test_validation_split_is_by_group(paired: tuple[Path, Path], tmp_path: Path) -> None:
    """With groups (patients) no group is on both sides of the split, and the head says so."""
    img, txt = paired
    with EmbeddingStore(img) as s:
        ids, x = list(s.ids), s.read()
    groups = [f"patient{i // 7}" for i in range(len(ids))]  # seven images per patient
    grouped = write_store(tmp_path / "img-g.h5", ids, x, columns={"groups": groups},
                          attrs={"modality": "image", "model_spec": "synthetic-image"})
    from stitchkit.head.data import read_side
    from stitchkit.head.train import split_train_val

    with EmbeddingStore(grouped) as s:
        side = read_side(s)
    tr, va = split_train_val(side, 0.1, seed=0)
    assert len(va) >= 0.1 * len(ids) - 7 and len(tr) + len(va) == len(ids)
    assert not set(side.groups[tr]) & set(side.groups[va])
    cfg = TrainConfig(min_steps=0, head=HeadConfig(width=16, heads=2), epochs=1, batch_size=64)
    train_head(grouped, txt, out=tmp_path / "g.st", config=replace(cfg, seed=0))
    assert Head.load(tmp_path / "g.st").meta_["training"]["val_split"] == "by group"
    train_head(img, txt, out=tmp_path / "r.st", config=replace(cfg, seed=0))
    assert Head.load(tmp_path / "r.st").meta_["training"]["val_split"] == "by row"


def test_training_leaves_the_matplotlib_backend_alone(paired: tuple[Path, Path], tmp_path: Path) -> None:
    import matplotlib

    img, txt = paired
    before = matplotlib.get_backend()
    cfg = TrainConfig(min_steps=0, head=HeadConfig(width=16, heads=2), epochs=1, batch_size=64)
    result = train_head(img, txt, out=tmp_path / "h.st", config=replace(cfg, seed=0))
    from stitchkit.report.loss_plot import plot_loss

    plot_loss(result.history, tmp_path / "l.png")
    assert matplotlib.get_backend() == before
    import stitchkit.head.train as train_module

    assert "matplotlib" not in Path(train_module.__file__).read_text()


def test_duplicate_captions_are_all_positives() -> None:
    keys = np.array([0, 1, 0, 2])
    pos = positives(keys)
    assert pos[0, 2] == 1 and pos[2, 0] == 1 and pos[0, 1] == 0
    # Logits that give equal captions equal scores are a perfect answer: the loss is at
    # its floor (log of the number of equal captions), not penalised as false negatives.
    logits = torch.where(pos.bool(), torch.tensor(20.0), torch.tensor(-20.0))
    loss = contrastive_loss(logits, pos)
    expected = (2 * np.log(2) + 2 * 0.0) / 4
    assert abs(float(loss) - expected) < 1e-3


def test_no_shared_ids_is_a_clear_error(tmp_path: Path) -> None:
    x = np.ones((10, 4), dtype=np.float32)
    img = write_store(tmp_path / "i.h5", [f"a{i}" for i in range(10)], x)
    txt = write_store(tmp_path / "t.h5", [f"b{i}" for i in range(10)], x)
    with pytest.raises(UsageError, match="share no ids"):
        train_head(img, txt, out=tmp_path / "h.st")


def test_pool_by_group_trains_on_studies(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    n_groups, views = 40, 3
    z = rng.normal(size=(n_groups, 6)).astype(np.float32)
    x = np.repeat(z @ rng.normal(size=(6, 12)).astype(np.float32), views, axis=0)
    x += 0.1 * rng.normal(size=x.shape).astype(np.float32)
    groups = [f"g{i}" for i in range(n_groups) for _ in range(views)]
    img = write_store(tmp_path / "i.h5", [f"v{i}" for i in range(len(x))], x,
                      columns={"groups": groups}, attrs={"model_spec": "img"})
    # One report per study: the text store's ids are the study ids.
    y = z @ rng.normal(size=(6, 10)).astype(np.float32)
    txt = write_store(tmp_path / "t.h5", [f"g{i}" for i in range(n_groups)], y, attrs={"model_spec": "txt"})
    cfg = TrainConfig(min_steps=0, head=HeadConfig(width=16, heads=2), epochs=2, batch_size=16, pool_by="group")
    result = train_head(img, txt, out=tmp_path / "h.st", config=cfg)
    assert result.n_pairs == n_groups
    assert Head.load(tmp_path / "h.st").meta_["pool_by"] == "group"
    with pytest.raises(UsageError, match="no groups column"):
        train_head(txt, txt, out=tmp_path / "h2.st", config=cfg)


def test_token_stores_train_and_classify(tmp_path: Path) -> None:
    """Patch and word tokens flow through training, the head file and classification."""
    from stitchkit.store import StoreWriter
    from stitchkit.store.store import base_attrs
    from stitchkit.zeroshot.prompts import parse_prompts
    from stitchkit.zeroshot.scoring import classify_store

    rng = np.random.default_rng(3)
    n, t_img, t_txt = 64, 5, 4
    img_attrs = base_attrs(model_spec="img-tok", modality="image")
    txt_attrs = base_attrs(model_spec="txt-tok", modality="text")
    ids = [f"s{i}" for i in range(n)]
    labels = ["pneumonia" if i % 2 else "normal" for i in range(n)]
    with StoreWriter(tmp_path / "i.h5", dim=12, attrs=img_attrs, columns=["labels"],
                     token_shape=(t_img, 12)) as w:
        w.append(ids, rng.normal(size=(n, 12)).astype(np.float32), columns={"labels": labels},
                 tokens=rng.normal(size=(n, t_img, 12)), tokens_mask=np.ones((n, t_img), bool))
    mask = np.ones((n, t_txt), bool)
    mask[::3, 2:] = False
    with StoreWriter(tmp_path / "t.h5", dim=8, attrs=txt_attrs, token_shape=(t_txt, 8)) as w:
        w.append(ids, rng.normal(size=(n, 8)).astype(np.float32),
                 tokens=rng.normal(size=(n, t_txt, 8)), tokens_mask=mask)
    cfg = TrainConfig(min_steps=0, head=HeadConfig(width=16, heads=2), epochs=2, batch_size=16)
    train_head(tmp_path / "i.h5", tmp_path / "t.h5", out=tmp_path / "h.st", config=cfg)
    head = Head.load(tmp_path / "h.st")
    assert head.uses_image_tokens_ and head.uses_text_tokens_
    prompts = ["There is pneumonia.", "There is no abnormality."]
    with StoreWriter(tmp_path / "p.h5", dim=8, attrs=txt_attrs, columns=["texts"], token_shape=(t_txt, 8)) as w:
        w.append(["p0", "p1"], rng.normal(size=(2, 8)).astype(np.float32), columns={"texts": prompts},
                 tokens=rng.normal(size=(2, t_txt, 8)), tokens_mask=np.ones((2, t_txt), bool))
    pset = parse_prompts({"normal": ["There is no abnormality."], "pneumonia": ["There is pneumonia."]},
                         source="test")
    res = classify_store(tmp_path / "i.h5", pset, prompt_store=tmp_path / "p.h5",
                         head_path=tmp_path / "h.st", bootstrap=0, allow_overlap=True)
    assert res.n == n and res.metrics is not None and res.metrics["n"] == n

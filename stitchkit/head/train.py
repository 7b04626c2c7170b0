"""Training a cross-attention head on image–text pairs (a library function; the CLI wraps it).

Loss: symmetric InfoNCE over the batch's (image × text) logit matrix. Several samples often
share one caption (label-derived captions, standardised sentences); those are all positives
of each other, so the target of a row is spread over every column with the same text. Without
that, identical captions would be pushed apart as false negatives.

Determinism: the model is initialised from ``seed``; each epoch's shuffle and dropout come
from (seed, epoch), so a run resumed at an epoch boundary continues exactly as it would have.
The checkpoint beside the output (``HEAD.ckpt``) holds weights, the best weights so far and
AdamW's moments as safetensors tensors, and the history as JSON; it is removed on success.
A checkpoint is resumed only when a hash of the *whole* training data (every id, global and
token of both sides), the settings and the seed match the current run.

Image tokens stay on disk and are read batch by batch (:class:`~stitchkit.head.data.LazyTokens`).
The validation split is by group (patient) where the image store has groups, so early
stopping never looks at a patient the head trained on. Plotting lives in
:mod:`stitchkit.report.loss_plot` (the CLI draws the curve): this module draws nothing.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..artifacts import load_artifact, save_artifact
from ..errors import UsageError
from ..fileio import check_writable_dir
from ..store import EmbeddingStore
from .data import Side, join_pairs, read_side
from .head import Head
from .model import (
    CrossAttentionHead,
    HeadConfig,
    known_settings,
    load_numpy_state,
    score_matrix,
    state_to_numpy,
)

ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings; ``head`` is the shape of the head."""

    head: HeadConfig = field(default_factory=HeadConfig)
    epochs: int = 30
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: float = 0.05  # fraction of all steps spent warming the learning rate up
    val_fraction: float = 0.1
    patience: int = 5  # epochs without a better validation loss before stopping
    image_tokens: bool = True  # use the image store's tokens where it has them
    text_tokens: bool = True
    pool_by: str | None = None
    # Fraction of each training image's patch tokens hidden from the attention at each step
    # (a fresh draw per step; the global always stays): the head must not lean on any single
    # token's detail, which a map from another model carries least well.
    token_dropout: float = 0.0
    # Probability that a training batch's square patch grid is passed through a grid two cells
    # coarser and back (area-weighted down, bilinear up: 9x9 → 7x7 → 9x9): queries mapped from
    # a model with a coarser grid arrive without the finest spatial detail.
    token_coarsen: float = 0.0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 2:
            raise UsageError("epochs (--epochs) must be ≥ 1 and --batch-size ≥ 2 (contrastive loss needs pairs)")
        if not 0.0 <= self.val_fraction < 0.9:
            raise UsageError(f"val_fraction (--val-fraction) must be in [0, 0.9), got {self.val_fraction}")
        if not 0.0 <= self.token_coarsen <= 1.0:
            raise UsageError(f"token coarsening must be in [0, 1], got {self.token_coarsen}")
        if not 0.0 <= self.token_dropout < 1.0:
            raise UsageError(f"token dropout must be in [0, 1), got {self.token_dropout}")
        if self.lr <= 0:
            raise UsageError(f"lr (--lr) must be positive, got {self.lr}")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["head"] = self.head.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: object = "training settings") -> TrainConfig:
        """The settings :meth:`to_dict` wrote; an unknown one is refused in one line, not dropped."""
        data = known_settings(cls, data, where)
        head = data.get("head", {})
        data["head"] = head if isinstance(head, HeadConfig) else HeadConfig.from_dict(head, where)
        return cls(**data)


@dataclass
class TrainResult:
    path: Path
    n_pairs: int
    n_train: int
    n_val: int
    epochs_run: int
    best_epoch: int
    stopped_early: bool
    resumed_from: int
    history: list[dict[str, float]]
    val: dict[str, float]
    seconds: float
    plot: Path | None = None  # set by the caller that draws the curve (the CLI)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["path"] = str(self.path)
        out["plot"] = str(self.plot) if self.plot else None
        return out


# -- loss ----------------------------------------------------------------------------------
def positives(keys: np.ndarray) -> torch.Tensor:
    """(B, B) float: 1 where two samples carry the same text (so both pairings are right)."""
    k = torch.as_tensor(keys)
    return (k[:, None] == k[None, :]).float()


def contrastive_loss(logits: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE with every same-text column (row) a positive."""
    row_t = pos / pos.sum(dim=1, keepdim=True)
    col_t = pos / pos.sum(dim=0, keepdim=True)
    i2t = -(row_t * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
    t2i = -(col_t * F.log_softmax(logits, dim=0)).sum(dim=0).mean()
    return 0.5 * (i2t + t2i)


def text_keys(text: Side) -> np.ndarray:
    """One integer per distinct text embedding: equal captions get equal keys."""
    digests = [hashlib.blake2b(np.ascontiguousarray(row).tobytes(), digest_size=8).digest()
               for row in text.glob]
    _, inverse = np.unique(np.array(digests, dtype=object), return_inverse=True)
    return inverse.astype(np.int64)


def lr_factor(step: int, total: int, warmup_steps: int) -> float:
    """Linear warm-up, then cosine decay to zero."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


# -- batches -------------------------------------------------------------------------------
def _batch(side: Side, rows: np.ndarray, use_tokens: bool) -> tuple:
    g = torch.from_numpy(side.glob[rows])
    if not use_tokens or side.tokens is None:
        return g, None, None
    tok = side.tokens[rows]
    mask = side.mask[rows]
    # Trim padding shared by the whole batch: text batches are often much shorter than T.
    t = int(mask.any(axis=0).nonzero()[0].max()) + 1 if mask.any() else 1
    return g, torch.from_numpy(tok[:, :t].astype(np.float32)), torch.from_numpy(mask[:, :t])


def _forward(model: CrossAttentionHead, img: Side, txt: Side, rows: np.ndarray,
             cfg: TrainConfig) -> torch.Tensor:
    ig, it, im = _batch(img, rows, cfg.image_tokens)
    tg, tt, tm = _batch(txt, rows, cfg.text_tokens)
    if model.training and cfg.token_coarsen > 0 and it is not None and bool(im.all()):
        side = math.isqrt(it.shape[1])
        if side * side == it.shape[1] and side > 2 and float(torch.rand(())) < cfg.token_coarsen:
            from ..store.grid import resample_tokens

            down = resample_tokens(it.numpy(), side - 2)
            it = torch.from_numpy(resample_tokens(down, side))
    if model.training and cfg.token_dropout > 0 and it is not None:
        # Drawn from torch's generator, seeded per epoch: a resumed run draws the same.
        im = im & (torch.rand(im.shape) >= cfg.token_dropout)
    return model(ig, tg, it, im, tt, tm)


def validation_metrics(model: CrossAttentionHead, img: Side, txt: Side, keys: np.ndarray,
             cfg: TrainConfig, max_retrieval: int = 1000) -> dict[str, float]:
    """Validation loss over fixed batches, and top-1 retrieval over up to ``max_retrieval``."""
    model.eval()
    losses, weights = [], []
    with torch.inference_mode():
        for a in range(0, len(img), cfg.batch_size):
            rows = np.arange(a, min(a + cfg.batch_size, len(img)))
            if len(rows) < 2:
                continue
            logits = _forward(model, img, txt, rows, cfg)
            losses.append(float(contrastive_loss(logits, positives(keys[rows]))))
            weights.append(len(rows))
    n = min(len(img), max_retrieval)
    sub_i, sub_t = img.take(np.arange(n)), txt.take(np.arange(n))
    use_it, use_tt = cfg.image_tokens and img.tokens is not None, cfg.text_tokens and txt.tokens is not None
    s = score_matrix(model, sub_i.glob, sub_t.glob,
                     sub_i.tokens if use_it else None, sub_i.mask if use_it else None,
                     sub_t.tokens if use_tt else None, sub_t.mask if use_tt else None)
    k = keys[:n]
    same = k[:, None] == k[None, :]
    i2t = float(same[np.arange(n), s.argmax(axis=1)].mean())
    t2i = float(same[s.argmax(axis=0), np.arange(n)].mean())
    model.train()
    return {
        "val_loss": float(np.average(losses, weights=weights)) if losses else float("nan"),
        "i2t_top1": i2t,
        "t2i_top1": t2i,
        "chance_top1": float(same.mean()),
        "n": n,
    }


# -- checkpoint ----------------------------------------------------------------------------
def checkpoint_path(out: Path) -> Path:
    return out.with_name(out.name + ".ckpt")


def _hash_side(h: Any, side: Side, use_tokens: bool, block: int = 256) -> None:
    for k in side.ids:
        h.update(str(k).encode())
        h.update(b"\0")
    h.update(np.ascontiguousarray(side.glob, dtype=np.float32).tobytes())
    if use_tokens and side.tokens is not None:
        h.update(np.ascontiguousarray(side.mask).tobytes())
        for a in range(0, len(side), block):  # streamed: tokens are read in blocks, never all
            rows = np.arange(a, min(a + block, len(side)))
            h.update(np.ascontiguousarray(side.tokens[rows], dtype=np.float16).tobytes())


def _fingerprint(img: Side, txt: Side, keys: np.ndarray, tr_rows: np.ndarray,
                 cfg: TrainConfig, seed: int) -> str:
    """A hash of everything the run depends on: all of both sides' data, the split, the
    positives, the settings and the seed (not just the first rows: a store with a changed
    row 5,000 must not resume a checkpoint made from the old one)."""
    h = hashlib.sha256()
    _hash_side(h, img, cfg.image_tokens)
    _hash_side(h, txt, cfg.text_tokens)
    h.update(np.ascontiguousarray(keys).tobytes())
    h.update(np.ascontiguousarray(tr_rows).tobytes())
    h.update(repr((cfg.to_dict(), seed)).encode())
    return h.hexdigest()[:32]


def _save_checkpoint(path: Path, model: CrossAttentionHead, best: dict[str, np.ndarray],
                     opt: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    tensors = state_to_numpy(model, "model.")
    tensors.update({"best." + k: v for k, v in best.items()})
    steps = []
    for i, p in enumerate(model.parameters()):
        st = opt.state.get(p, {})
        if "exp_avg" in st:
            tensors[f"optim.{i}.exp_avg"] = st["exp_avg"].numpy().copy()
            tensors[f"optim.{i}.exp_avg_sq"] = st["exp_avg_sq"].numpy().copy()
            steps.append(float(st["step"]))
    save_artifact(path, "head-checkpoint", tensors, {**state, "optim_steps": steps})


def _load_checkpoint(path: Path, model: CrossAttentionHead, opt: torch.optim.Optimizer
                     ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    tensors, meta = load_artifact(path, "head-checkpoint")
    load_numpy_state(model, {k: v for k, v in tensors.items() if k.startswith("model.")}, "model.")
    best = {k[len("best."):]: v for k, v in tensors.items() if k.startswith("best.")}
    steps = meta.get("optim_steps", [])
    for i, p in enumerate(model.parameters()):
        if f"optim.{i}.exp_avg" in tensors and i < len(steps):
            opt.state[p] = {
                "step": torch.tensor(steps[i]),
                "exp_avg": torch.from_numpy(tensors[f"optim.{i}.exp_avg"].copy()),
                "exp_avg_sq": torch.from_numpy(tensors[f"optim.{i}.exp_avg_sq"].copy()),
            }
    return best, meta


# -- the loop ------------------------------------------------------------------------------
def split_train_val(img: Side, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random split of the pairs; by group (patient) where the side has groups.

    With groups, whole groups go to validation (in a seeded random order) until about
    ``val_fraction`` of the pairs are there, so no patient is on both sides. Pooled samples
    are whole studies already.
    """
    n = len(img)
    n_val = int(round(n * val_fraction)) if val_fraction > 0 else 0
    if val_fraction > 0 and n_val < 2:
        n_val = min(2, n - 2)
    rng = np.random.default_rng([seed, 7])
    if n_val and img.groups is not None and len(np.unique(img.groups.astype(str))) > 1:
        uniq, inverse = np.unique(img.groups.astype(str), return_inverse=True)
        val = np.zeros(n, dtype=bool)
        for g in rng.permutation(len(uniq)):
            if val.sum() >= n_val:
                break
            val |= inverse == g
        if (~val).sum() >= 2:
            return np.nonzero(~val)[0], np.nonzero(val)[0]
    perm = rng.permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def train_head(
    image_store: str | os.PathLike | EmbeddingStore,
    text_store: str | os.PathLike | EmbeddingStore,
    *,
    out: str | os.PathLike,
    config: TrainConfig | None = None,
    seed: int = 0,
    progress: ProgressFn | None = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    resume: bool = True,
    threads: int | None = None,
    ids: list[str] | None = None,
) -> TrainResult:
    """Train a head on the pairs the two stores share (joined by id) and save it at ``out``.

    ``ids`` restricts training to those pairs (e.g. the train split). Returns what was done,
    with the loss history (draw it with :func:`stitchkit.report.loss_plot.plot_loss`); the
    head is at ``out``.

    >>> result = train_head("k-lite2.h5", "k-captions-minilm.h5", out="head.st")  # doctest: +SKIP
    """
    cfg = config or TrainConfig()
    out = Path(out)
    check_writable_dir(out)
    t0 = time.perf_counter()
    if threads:
        torch.set_num_threads(threads)
    istore = image_store if isinstance(image_store, EmbeddingStore) else EmbeddingStore(image_store)
    tstore = text_store if isinstance(text_store, EmbeddingStore) else EmbeddingStore(text_store)
    img_all = read_side(istore, tokens=cfg.image_tokens, pool_by=cfg.pool_by)
    txt_all = read_side(tstore, tokens=cfg.text_tokens,
                        pool_by=cfg.pool_by if tstore.groups is not None else None)
    if ids is not None:
        wanted = set(ids)
        img_all = img_all.take(np.array([i for i, k in enumerate(img_all.ids) if k in wanted],
                                        dtype=np.int64))
    img, txt = join_pairs(img_all, txt_all)
    if len(img) < 8:
        raise UsageError(f"only {len(img)} image–text pairs share an id: a head needs at least 8")
    label_positives = bool(str(tstore.attrs.get("captions") or "").startswith("label-derived")
                           and txt.labels is not None)
    # Label-derived captions vary their phrasing; every caption of one label is a positive.
    keys = (np.unique(txt.labels.astype(str), return_inverse=True)[1].astype(np.int64)
            if label_positives else text_keys(txt))
    if len(np.unique(keys)) < 2:
        raise UsageError("every pair has the same text: a contrastive head needs at least two different texts")
    tr_rows, va_rows = split_train_val(img, cfg.val_fraction, seed)
    img_tr, txt_tr, k_tr = img.take(tr_rows), txt.take(tr_rows), keys[tr_rows]
    img_va, txt_va, k_va = img.take(va_rows), txt.take(va_rows), keys[va_rows]

    torch.manual_seed(seed)
    model = CrossAttentionHead(istore.dim, tstore.dim, cfg.head)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, len(tr_rows) // cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    warmup_steps = max(1, int(cfg.warmup * total))

    ckpt = checkpoint_path(out)
    fingerprint = _fingerprint(img, txt, keys, tr_rows, cfg, seed)
    history: list[dict[str, float]] = []
    best = state_to_numpy(model)
    best_loss, best_epoch, bad, start_epoch = float("inf"), 0, 0, 0
    if resume and ckpt.exists():
        probe_meta = load_artifact(ckpt, "head-checkpoint")[1]
        if probe_meta.get("fingerprint") != fingerprint:
            raise UsageError(
                f"checkpoint {ckpt} was made from other inputs, settings or seed: delete it or "
                "pass --no-resume to start over"
            )
        best, meta = _load_checkpoint(ckpt, model, opt)
        history = meta["history"]
        best_loss, best_epoch, bad = meta["best_loss"], meta["best_epoch"], meta["bad_epochs"]
        start_epoch = meta["epoch"]
    resumed_from = start_epoch

    if progress:
        progress(start_epoch * steps_per_epoch, total)
    stopped_early = bad >= cfg.patience and len(va_rows) > 0
    model.train()
    epoch = start_epoch
    for epoch in range(start_epoch, cfg.epochs):
        if stopped_early:
            break
        rng = np.random.default_rng([seed, epoch])
        torch.manual_seed(seed * 100003 + epoch)
        perm = rng.permutation(len(tr_rows))
        train_losses = []
        for s in range(steps_per_epoch):
            rows = perm[s * cfg.batch_size:(s + 1) * cfg.batch_size]
            step = epoch * steps_per_epoch + s
            for group in opt.param_groups:
                group["lr"] = cfg.lr * lr_factor(step, total, warmup_steps)
            logits = _forward(model, img_tr, txt_tr, rows, cfg)
            loss = contrastive_loss(logits, positives(k_tr[rows]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            train_losses.append(loss.item())
            if progress:
                progress(step + 1, total)
        record: dict[str, float] = {"epoch": epoch + 1, "train_loss": float(np.mean(train_losses))}
        if len(va_rows):
            record.update(validation_metrics(model, img_va, txt_va, k_va, cfg))
            if record["val_loss"] < best_loss - 1e-4:
                best_loss, best_epoch, bad = record["val_loss"], epoch + 1, 0
                best = state_to_numpy(model)
            else:
                bad += 1
        else:
            best, best_epoch = state_to_numpy(model), epoch + 1
        history.append(record)
        _save_checkpoint(ckpt, model, best, opt, {
            "fingerprint": fingerprint, "epoch": epoch + 1, "history": history,
            "best_loss": best_loss, "best_epoch": best_epoch, "bad_epochs": bad,
        })
        if on_epoch:  # after the checkpoint: an interruption here loses nothing
            on_epoch(record)
        if len(va_rows) and bad >= cfg.patience:
            stopped_early = True
            break

    load_numpy_state(model, best)
    val = validation_metrics(model, img_va, txt_va, k_va, cfg) if len(va_rows) else {}
    head = Head(model, image_space=istore.space(), text_space=tstore.space(), meta={
        "config": cfg.to_dict(),
        "seed": seed,
        "image_tokens": bool(cfg.image_tokens and img.tokens is not None),
        "image_token_count": (int(img.tokens.shape[1])
                              if cfg.image_tokens and img.tokens is not None else None),
        "text_tokens": bool(cfg.text_tokens and txt.tokens is not None),
        "pool_by": cfg.pool_by,
        "inputs": {
            "image_store": str(istore.path), "text_store": str(tstore.path),
            "image_modality": istore.modality, "text_modality": tstore.modality,
            "text_origin": tstore.attrs.get("captions") or tstore.attrs.get("input"),
        },
        "training": {
            "n_pairs": len(img), "n_train": len(tr_rows), "n_val": len(va_rows),
            "distinct_texts": int(len(np.unique(text_keys(txt)))), "best_epoch": best_epoch,
            "positives": "same label" if label_positives else "same text",
            "val_split": ("by group" if img.groups is not None and len(va_rows)
                          and not set(img.groups[va_rows]) & set(img.groups[tr_rows]) else "by row"),
            "epochs_run": len(history), "val": val, "history": history,
        },
    })
    head.save(out)
    ckpt.unlink(missing_ok=True)
    return TrainResult(
        path=out, n_pairs=len(img), n_train=len(tr_rows), n_val=len(va_rows),
        epochs_run=len(history), best_epoch=best_epoch, stopped_early=stopped_early,
        resumed_from=resumed_from, history=history, val=val,
        seconds=time.perf_counter() - t0,
    )


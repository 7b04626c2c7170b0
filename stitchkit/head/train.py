"""Training a cross-attention head on image–text pairs (a library function; the CLI wraps it).

Loss: symmetric InfoNCE on each direction's (image × text) logit matrix separately (as
CARZero's code does: the image→text and text→image representations are each supervised, so
one cannot carry the other). Several samples often share one caption (label-derived captions,
standardised sentences); those are all positives of each other, so the target of a row is
spread over every column with the same text. A text is also a positive of every image whose
report holds that sentence. Without that, identical captions would be pushed apart as false
negatives.

Schedule: in steps. The batch is ``batch_size`` at most and an eighth of the training pairs
at least 16 (:func:`batch_for`); the run lasts ``epochs`` epochs or ``min_steps`` steps,
whichever is longer, so 200 pairs get as many updates as 5,000; no partial batch is dropped.
Validation keeps the best of a few (``candidates``) evenly spaced checkpoints and of the
starting point, by the validation loss over all held-out pairs: no early stopping on noise by
default (``patience`` 0). A residual head (:mod:`stitchkit.head.model`) starts as the
closed-form cosine route of all its pairs (the map is fitted on the held-out pairs too, so the
start does not move with the seed's split), and the head kept never has a higher validation
loss than that route's ranking.

Texts: a text store pairs with the images by id, or (a sentence store, ``stitch head captions
--sentences``) by its ``image`` column with one row per sentence; each step draws one sentence
per image, which matches how prompts are scored. Pairs from several (image, text) stores train
one head, each store giving as many rows per epoch as the largest (:func:`balanced_order`).

Determinism: the model is initialised from ``seed`` (on the CPU, then moved); each epoch's
batches and dropout come from (seed, epoch), so a run resumed from its checkpoint (at an
epoch's end, or within a long epoch: :mod:`stitchkit.head.checkpoint`) continues exactly as
it would have. The checkpoint is removed on success.

Data: neither globals nor tokens are held; a background thread reads the batches in the
image store's order, window by window, while the head computes (:mod:`stitchkit.head.stream`).
Device and precision: :class:`ComputeOptions` (``device``) and ``TrainConfig.precision``
(torch.autocast; the loss and the weights stay float32) — :mod:`stitchkit.devices`.
The validation split is by group (patient) where the image store has groups, so early
stopping never looks at a patient the head trained on. Plotting lives in
:mod:`stitchkit.report.loss_plot` (the CLI draws the curve): this module draws nothing.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..artifacts import load_artifact
from ..devices import (
    autocast,
    check_precision,
    device_name,
    device_record,
    resolve_device,
    torch_threads,
)
from ..errors import UsageError
from ..fileio import check_writable_dir
from ..fitted_on import FittedOn
from ..fitted_on import Part as FittedPart
from ..store import EmbeddingStore, check_same_space
from .checkpoint import (
    CheckpointState,
    checkpoint_path,
    fingerprint,
    load_checkpoint,
    restore_rng,
    rng_state,
    save_checkpoint,
)
from .config import ComputeOptions, TrainConfig
from .data import (
    IMAGE_COLUMN,
    Sentences,
    Side,
    concat_sides,
    join_sentences,
    pairing_keys,
    read_side,
)
from .head import Head
from .model import (
    CrossAttentionHead,
    load_numpy_state,
    module_device,
    score_matrix,
    state_to_numpy,
)
from .residual import fit_cosine_map
from .stream import (
    Batch,
    BatchSpec,
    Prefetch,
    Shuffle,
    balanced_order,
    batch_bounds,
    batches,
    epoch_order,
    read_batch,
    tensors,
)

ProgressFn = Callable[[int, int], None]


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
    device: str = "cpu"  # where it trained (cpu, cuda:N)
    precision: str = "fp32"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["path"] = str(self.path)
        out["plot"] = str(self.plot) if self.plot else None
        return out


# -- loss ----------------------------------------------------------------------------------
@dataclass
class PairKeys:
    """Who is a positive of whom: ``text[j]``, the key of the text paired with sample ``j``
    (equal texts or labels: equal keys); ``own[i]``, the keys of all of sample ``i``'s texts
    (its report's sentences; -1 pads)."""

    text: np.ndarray
    own: np.ndarray

    def take(self, rows: np.ndarray) -> PairKeys:
        return PairKeys(self.text[rows], self.own[rows])

    def with_texts(self, text: np.ndarray) -> PairKeys:
        return PairKeys(np.asarray(text, dtype=np.int64), self.own)

    def positives(self, rows: np.ndarray | None = None) -> torch.Tensor:
        """(B, B) float: 1 where image ``i``'s texts include text ``j`` (so the pairing is right)."""
        k = self if rows is None else self.take(rows)
        return torch.as_tensor((k.own[:, :, None] == k.text[None, None, :]).any(axis=1)).float()


def positives(keys: np.ndarray) -> torch.Tensor:
    """(B, B) float: 1 where two samples carry the same text (each sample's one text its own)."""
    keys = np.asarray(keys, dtype=np.int64)
    return PairKeys(keys, keys[:, None]).positives()


def contrastive_loss(logits: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE with every same-text column (row) a positive."""
    row_t = pos / pos.sum(dim=1, keepdim=True)
    col_t = pos / pos.sum(dim=0, keepdim=True)
    i2t = -(row_t * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
    t2i = -(col_t * F.log_softmax(logits, dim=0)).sum(dim=0).mean()
    return 0.5 * (i2t + t2i)


def directional_loss(i2t: torch.Tensor, t2i: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """The contrastive loss of each direction's logits, averaged (CARZero supervises both)."""
    return 0.5 * (contrastive_loss(i2t, pos) + contrastive_loss(t2i, pos))


def batch_for(n_train: int, batch_size: int) -> int:
    """Pairs per batch: ``batch_size`` at most, an eighth of the training pairs (at least 16,
    at most all of them): 200 pairs make 8 steps an epoch, not 1."""
    return max(2, min(batch_size, n_train, max(16, n_train // 8)))


def text_keys(text: Side, block: int = 4096) -> np.ndarray:
    """One integer per distinct text embedding: equal captions get equal keys (read in blocks)."""
    digests: list[bytes] = []
    for a in range(0, len(text), block):
        digests.extend(hashlib.blake2b(row.tobytes(), digest_size=8).digest()
                       for row in text.read_glob(slice(a, a + block)))
    _, inverse = np.unique(np.array(digests, dtype=object), return_inverse=True)
    return inverse.astype(np.int64)


def lr_factor(step: int, total: int, warmup_steps: int) -> float:
    """Linear warm-up, then cosine decay to zero."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


# -- batches on the device -------------------------------------------------------------------
Part = tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]


def _augment(image: Part, cfg: TrainConfig) -> Part:
    """Token coarsening and dropout of a training batch, drawn from torch's CPU generator in
    this thread (seeded per epoch: a resumed run draws the same)."""
    ig, it, im = image
    if cfg.token_coarsen > 0 and it is not None and bool(im.all()):
        side = math.isqrt(it.shape[1])
        if side * side == it.shape[1] and side > 2 and float(torch.rand(())) < cfg.token_coarsen:
            from ..store.grid import resample_tokens

            down = resample_tokens(it.float().numpy(), side - 2)
            it = torch.from_numpy(resample_tokens(down, side))
    if cfg.token_dropout > 0 and it is not None:
        im = im & (torch.rand(im.shape) >= cfg.token_dropout)
    return ig, it, im


def _on_device(part: Part, dev: torch.device) -> Part:
    """A batch side on ``dev``: tokens cross as they were read (float16: half the bytes to a
    GPU) and become float32 there (on the CPU nothing moves; torch converts them)."""
    g, t, m = part
    return (g.to(dev, non_blocking=True), None if t is None else t.to(dev, non_blocking=True).float(),
            None if m is None else m.to(dev, non_blocking=True))


def _logits(model: CrossAttentionHead, image: Part, text: Part, cfg: TrainConfig,
            dev: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch's (image × text) logits of each direction in float32, the forward pass in
    ``cfg.precision``."""
    if model.training:
        image = _augment(image, cfg)
    ig, it, im = _on_device(image, dev)
    tg, tt, tm = _on_device(text, dev)
    with autocast(dev, cfg.precision):
        i2t, t2i = model(ig, tg, it, im, tt, tm, directions=True)
    return i2t.float(), t2i.float()


VAL_BLOCK = 512  # held-out pairs per validation batch: all of them up to this many


def validation_metrics(model: CrossAttentionHead, img: Side, txt: Side, keys: PairKeys,
                       cfg: TrainConfig, max_retrieval: int = 1000) -> dict[str, float]:
    """Validation loss over blocks of up to ``VAL_BLOCK`` held-out pairs (in the training
    precision: one block up to that many, so the loss does not swing with a batch's draw), and
    top-1 retrieval over up to ``max_retrieval`` pairs (float32), where the model's weights are."""
    dev = module_device(model)
    model.eval()
    losses, weights = [], []
    with torch.inference_mode():
        for a, b in batch_bounds(len(img), VAL_BLOCK):
            rows = np.arange(a, b)
            if len(rows) < 2:
                continue
            image = tensors(read_batch(img, rows, cfg.image_tokens))
            text = tensors(read_batch(txt, rows, cfg.text_tokens))
            i2t, t2i = _logits(model, image, text, cfg, dev)
            losses.append(float(directional_loss(i2t, t2i, keys.positives(rows).to(dev))))
            weights.append(len(rows))
    n = min(len(img), max_retrieval)
    sub_i, sub_t = img.take(np.arange(n)), txt.take(np.arange(n))
    use_it, use_tt = cfg.image_tokens and img.tokens is not None, cfg.text_tokens and txt.tokens is not None
    s = score_matrix(model, sub_i.glob, sub_t.glob,
                     sub_i.tokens if use_it else None, sub_i.mask if use_it else None,
                     sub_t.tokens if use_tt else None, sub_t.mask if use_tt else None)
    same = keys.take(np.arange(n)).positives().numpy().astype(bool)
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


# -- the data ------------------------------------------------------------------------------
StoreLike = str | os.PathLike | EmbeddingStore


@dataclass
class Pairs:
    """The pairs a run trains on: every image that has a text, every text row, which texts are
    each image's (:class:`Sentences`), the positives' keys, the split, each image's source.
    ``istore`` / ``tstore`` are the first source's stores: their spaces name the head's."""

    istore: EmbeddingStore
    tstore: EmbeddingStore
    img: Side
    txt: Side
    sentences: Sentences
    keys: PairKeys  # ``text``: one key per text row; ``own``: each image's texts' keys
    tr_rows: np.ndarray
    va_rows: np.ndarray
    label_positives: bool
    sources: np.ndarray  # per image: the number of the (images, texts) pair of stores it is from
    paths: list[tuple[str, str]]
    fitted_on: FittedOn | None = None  # the image rows trained on, hashed (:func:`fitted_rows`)

    def part(self, rows: np.ndarray, text_rows: np.ndarray | None = None) -> tuple[Side, Side, PairKeys]:
        """Images ``rows`` with one text each: ``text_rows`` (one per image), else each one's first."""
        chosen = self.sentences.take(rows).first() if text_rows is None else text_rows
        return self.img.take(rows), self.txt.take(chosen), self.keys.take(rows).with_texts(self.keys.text[chosen])


def open_store(store: StoreLike) -> EmbeddingStore:
    return store if isinstance(store, EmbeddingStore) else EmbeddingStore(store)


def read_source(istore: EmbeddingStore, tstore: EmbeddingStore, cfg: TrainConfig,
                ids: list[str] | None) -> tuple[Side, Side, Sentences]:
    """One pair of stores: the images with a text (``ids`` only, where given), all text rows,
    and which text rows are each image's."""
    sentence_store = tstore.attrs.get("pairs_by") == IMAGE_COLUMN
    if sentence_store and cfg.pool_by:
        raise UsageError(f"{tstore.path} holds a row per sentence: train on it without --pool-by")
    img = read_side(istore, tokens=cfg.image_tokens, pool_by=cfg.pool_by)
    txt = read_side(tstore, tokens=cfg.text_tokens,
                    pool_by=cfg.pool_by if tstore.groups is not None and not sentence_store else None)
    if ids is not None:
        wanted = set(ids)
        img = img.take(np.array([i for i, k in enumerate(img.ids) if k in wanted], dtype=np.int64))
    return join_sentences(img, txt, pairing_keys(tstore, txt))


def load_pairs(sources: list[tuple[StoreLike, StoreLike]], cfg: TrainConfig,
               ids: list[str] | None = None) -> Pairs:
    """Open every (images, texts) pair of stores (nothing but ids, masks and labels is held),
    check they share two spaces, join each, put them together and split them."""
    stores = [(open_store(i), open_store(t)) for i, t in sources]
    istore, tstore = stores[0]
    for n, (i, t) in enumerate(stores[1:], 2):
        check_same_space(istore.space(), i.space(), expected_what=f"image store {istore.path}",
                         got_what=f"image store {i.path} (pair {n})")
        check_same_space(tstore.space(), t.space(), expected_what=f"text store {tstore.path}",
                         got_what=f"text store {t.path} (pair {n})")
    parts = [read_source(i, t, cfg, ids) for i, t in stores]
    img = concat_sides([p[0] for p in parts])
    txt = concat_sides([p[1] for p in parts])
    offsets = np.cumsum([0] + [len(p[1]) for p in parts])
    sentences = Sentences(
        np.concatenate([[0], np.cumsum(np.concatenate([p[2].counts() for p in parts]))]).astype(np.int64),
        np.concatenate([p[2].rows + off for p, off in zip(parts, offsets, strict=False)]))
    if len(img) < 8:
        raise UsageError(f"only {len(img)} image–text pairs share an id: a head needs at least 8")
    label_positives = all(str(t.attrs.get("captions") or "").startswith("label-derived") for _, t in stores) \
        and txt.labels is not None
    # Label-derived captions vary their phrasing; every caption of one label is a positive.
    text = (np.unique(txt.labels.astype(str), return_inverse=True)[1].astype(np.int64)
            if label_positives else text_keys(txt))
    keys = PairKeys(text, own_keys(text, sentences))
    if len(np.unique(text[sentences.rows])) < 2:
        raise UsageError("every pair has the same text: a contrastive head needs at least two different texts")
    tr_rows, va_rows = split_train_val(img, cfg.val_fraction, cfg.seed)
    source = np.concatenate([np.full(len(p[0]), n) for n, p in enumerate(parts)])
    return Pairs(istore, tstore, img, txt, sentences, keys, tr_rows, va_rows, label_positives, source,
                 [(str(i.path), str(t.path)) for i, t in stores],
                 fitted_rows([i for i, _ in stores], [p[0] for p in parts], cfg.pool_by))


def fitted_rows(stores: list[EmbeddingStore], sides: list[Side], pool_by: str | None) -> FittedOn:
    """The image rows a head trains on (its validation pairs too: they choose the weights kept),
    per image store: their ids and groups, hashed (:mod:`stitchkit.fitted_on`). Pooled, a
    sample is a group: its rows are every view of it."""
    parts = []
    for store, side in zip(stores, sides, strict=True):
        if pool_by is None:
            parts.append(FittedPart.of(side.ids, side.groups, store.path, store.attrs.get("input")))
            continue
        groups = store.groups.astype(str)
        rows = np.isin(groups, np.asarray(side.ids, dtype=str))
        parts.append(FittedPart.of(store.ids[rows], groups[rows], store.path, store.attrs.get("input")))
    return FittedOn.of(parts)


def own_keys(text: np.ndarray, sentences: Sentences) -> np.ndarray:
    """(images, most texts of one image) keys of each image's texts, first text first; -1 pads."""
    counts = sentences.counts()
    own = np.full((len(counts), max(1, int(counts.max(initial=1)))), -1, dtype=np.int64)
    col = np.arange(len(sentences.rows)) - np.repeat(sentences.start[:-1], counts)
    own[np.repeat(np.arange(len(counts)), counts), col] = text[sentences.rows]
    return own


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


# -- the loop ------------------------------------------------------------------------------
class Trainer:
    """One training run: the model, its optimiser, the loop's state and the checkpoint."""

    def __init__(self, pairs: Pairs, cfg: TrainConfig, run: ComputeOptions, out: Path) -> None:
        self.pairs, self.cfg, self.seed, self.run, self.out = pairs, cfg, cfg.seed, run, out
        seed = cfg.seed
        self.dev = resolve_device(run.device)
        check_precision(cfg.precision, self.dev)
        self.train_part = pairs.part(pairs.tr_rows)  # (image side, text side, keys): first texts
        self.val_part = pairs.part(pairs.va_rows)
        torch.manual_seed(seed)  # initialised on the CPU: the same weights on every device
        self.model = CrossAttentionHead(pairs.istore.dim, pairs.tstore.dim, cfg.head)
        self.residual: dict[str, Any] | None = None
        if cfg.head.residual:
            # Fitted on every (image, sentence) row of all the pairs, held-out ones too, as `stitch fit
            # --holdout 0` fits the cosine route: the start does not depend on the seed's split
            # (on 185 pairs, which 18 are held out moved the start's Kermany AUC from 0.82 to 0.65),
            # and validation, which has seen the map, keeps the start unless the correction earns it.
            everyone = np.arange(len(pairs.img))
            sent = pairs.sentences.take(everyone)
            matrix, offset, self.residual = fit_cosine_map(
                pairs.img.take(np.repeat(everyone, sent.counts())), pairs.txt.take(sent.rows), seed)
            self.model.set_cosine_map(matrix, offset)
        self.model.to(self.dev)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scaler = torch.amp.GradScaler(self.dev.type) if cfg.precision == "fp16" else None
        self.batch_size = batch_for(len(pairs.tr_rows), cfg.batch_size)
        self.steps_per_epoch = len(batch_bounds(len(self.epoch_order(0)), self.batch_size))
        self.epochs = max(cfg.epochs, -(-cfg.min_steps // self.steps_per_epoch))
        self.total = self.steps_per_epoch * self.epochs
        self.warmup_steps = max(1, int(cfg.warmup * self.total))
        # The epochs whose end is a checkpoint validation chooses among (the last always is).
        self.candidates = {-(-self.epochs * k // cfg.candidates) for k in range(1, cfg.candidates + 1)}
        self.spec = BatchSpec(self.batch_size, cfg.image_tokens, cfg.text_tokens, self.dev,
                              cfg.shuffle_buffer, run.prefetch)
        self.ckpt = checkpoint_path(out)
        # The seed is hashed on its own, as before it was a setting: older checkpoints still match.
        settings = {k: v for k, v in cfg.to_dict().items() if k != "seed"}
        self.fingerprint = fingerprint(pairs, settings, seed)
        self.state = CheckpointState(best=state_to_numpy(self.model), fingerprint=self.fingerprint)

    def epoch_order(self, epoch: int) -> np.ndarray:
        """Positions in the training part: the stores' order shuffled in blocks (one source),
        or each source as often as the largest (several)."""
        sources = self.pairs.sources[self.pairs.tr_rows]
        if len(np.unique(sources)) > 1:
            return balanced_order(sources, self.seed, epoch)
        shuffle = Shuffle(self.cfg.shuffle_block, self.cfg.shuffle_buffer)
        return epoch_order(len(sources), shuffle, self.seed, epoch)

    def epoch_part(self, epoch: int) -> tuple[Side, Side, PairKeys]:
        """The training part with one text per image drawn for this epoch (its first where each
        image has one)."""
        sentences = self.pairs.sentences.take(self.pairs.tr_rows)
        if (sentences.counts() == 1).all():
            return self.train_part
        rows = sentences.draw(np.random.default_rng([self.seed, epoch, 2]))
        return self.pairs.part(self.pairs.tr_rows, rows)

    def resume(self) -> None:
        """Continue from the checkpoint beside the output, if it was made from this very run."""
        if not self.ckpt.exists():
            return
        if load_artifact(self.ckpt, "head-checkpoint")[1].get("fingerprint") != self.fingerprint:
            raise UsageError(
                f"checkpoint {self.ckpt} was made from other inputs, settings or seed: delete it or "
                "pass --no-resume to start over"
            )
        self.state = load_checkpoint(self.ckpt, self.model, self.opt, self.scaler)

    def stopping(self) -> bool:
        return bool(self.cfg.patience and len(self.pairs.va_rows) and self.state.bad >= self.cfg.patience)

    def fit(self, progress: ProgressFn | None, on_epoch: Callable[[dict[str, float]], None] | None) -> bool:
        """Train for the step budget (or until ``patience`` checkpoints bring nothing better);
        True when it stopped early."""
        st = self.state
        if st.epoch == 0 and st.step == 0 and len(self.pairs.va_rows):
            # The starting point is a candidate: for a residual head, the cosine route's ranking.
            st.best_loss = validation_metrics(self.model, *self.val_part, self.cfg)["val_loss"]
        if progress:
            progress(st.epoch * self.steps_per_epoch + st.step, self.total)
        self.model.train()
        while st.epoch < self.epochs and not self.stopping():
            self.train_epoch(progress)
            record = self.end_epoch()
            if on_epoch:  # after the checkpoint: an interruption here loses nothing
                on_epoch(record)
        return self.stopping()

    def train_epoch(self, progress: ProgressFn | None) -> None:
        st = self.state
        img, txt, keys = self.epoch_part(st.epoch)
        order = self.epoch_order(st.epoch)
        torch.manual_seed(self.seed * 100003 + st.epoch)
        if st.step:  # resumed within this epoch: the generators as they were at that step
            restore_rng(st.rng, self.dev)
        last = time.monotonic()
        with Prefetch(batches(img, txt, order, self.spec, st.step), self.spec.depth) as loader:
            for batch in loader:
                step = st.epoch * self.steps_per_epoch + st.step
                st.losses.append(self.step(batch, keys, step))
                st.step += 1
                if progress:
                    progress(step + 1, self.total)
                if st.step < self.steps_per_epoch and time.monotonic() - last >= self.run.checkpoint_every:
                    st.rng = rng_state(self.dev)
                    self.save()
                    last = time.monotonic()

    def step(self, batch: Batch, keys: PairKeys, step: int) -> float:
        for group in self.opt.param_groups:
            group["lr"] = self.cfg.lr * lr_factor(step, self.total, self.warmup_steps)
        i2t, t2i = _logits(self.model, batch.image, batch.text, self.cfg, self.dev)
        loss = directional_loss(i2t, t2i, keys.positives(batch.rows).to(self.dev))
        self.opt.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
            self.opt.step()
        else:  # fp16: the loss scaled against underflow, the step skipped on inf / nan
            self.scaler.scale(loss).backward()
            self.scaler.step(self.opt)
            self.scaler.update()
        return loss.item()

    def end_epoch(self) -> dict[str, float]:
        st = self.state
        epoch = st.epoch + 1
        record: dict[str, float] = {"epoch": epoch, "train_loss": float(np.mean(st.losses))}
        if len(self.pairs.va_rows):
            record.update(validation_metrics(self.model, *self.val_part, self.cfg))
            if epoch in self.candidates or epoch == self.epochs:
                if record["val_loss"] < st.best_loss - 1e-4:
                    st.best_loss, st.best_epoch, st.bad = record["val_loss"], epoch, 0
                    st.best = state_to_numpy(self.model)
                else:
                    st.bad += 1
        else:
            st.best, st.best_epoch = state_to_numpy(self.model), epoch
        st.history.append(record)
        st.epoch, st.step, st.losses, st.rng = epoch, 0, [], None
        self.save()
        return record

    def save(self) -> None:
        save_checkpoint(self.ckpt, self.model, self.opt, self.scaler, self.state)

    def finish(self) -> tuple[Head, dict[str, float]]:
        """The best weights as a head (saved at the output), and their validation figures."""
        load_numpy_state(self.model, self.state.best)
        val = validation_metrics(self.model, *self.val_part, self.cfg) if len(self.pairs.va_rows) else {}
        head = Head(self.model, image_space=self.pairs.istore.space(), text_space=self.pairs.tstore.space(),
                    meta=head_meta(self, val), fitted_on=self.pairs.fitted_on)
        head.save(self.out)
        self.ckpt.unlink(missing_ok=True)
        return head, val


def head_meta(t: Trainer, val: dict[str, float]) -> dict[str, Any]:
    """What the head file records of its training: settings, inputs, split, device, history."""
    p, cfg = t.pairs, t.cfg
    img, txt, tr, va = p.img, p.txt, p.tr_rows, p.va_rows
    return {
        "config": cfg.to_dict(),
        "seed": t.seed,
        "image_tokens": bool(cfg.image_tokens and img.tokens is not None),
        "image_token_count": int(img.tokens.shape[1]) if cfg.image_tokens and img.tokens is not None else None,
        "text_tokens": bool(cfg.text_tokens and txt.tokens is not None),
        "pool_by": cfg.pool_by,
        "inputs": {
            "image_store": str(p.istore.path), "text_store": str(p.tstore.path),
            "image_modality": p.istore.modality, "text_modality": p.tstore.modality,
            "text_origin": p.tstore.attrs.get("captions") or p.tstore.attrs.get("input"),
            "pairs": [{"image_store": i, "text_store": s, "n_images": int((p.sources == n).sum())}
                      for n, (i, s) in enumerate(p.paths)],
        },
        "training": {
            "n_pairs": len(img), "n_train": len(tr), "n_val": len(va), "n_texts": int(len(p.sentences.rows)),
            "distinct_texts": int(len(np.unique(p.keys.text[p.sentences.rows]))),
            "best_epoch": t.state.best_epoch,
            "positives": "same label" if p.label_positives else "same text",
            "val_split": ("by group" if img.groups is not None and len(va)
                          and not set(img.groups[va]) & set(img.groups[tr]) else "by row"),
            "batch_size": t.batch_size, "steps": t.total, "epochs": t.epochs,
            "residual_map": t.residual,
            "epochs_run": len(t.state.history), "val": val, "history": t.state.history,
            **device_record(t.dev, cfg.precision),
        },
    }


def train_head(
    image_store: str | os.PathLike | EmbeddingStore,
    text_store: str | os.PathLike | EmbeddingStore,
    *,
    out: str | os.PathLike,
    config: TrainConfig | None = None,
    run: ComputeOptions | None = None,
    ids: list[str] | None = None,
    more_pairs: Sequence[tuple[StoreLike, StoreLike]] = (),
) -> TrainResult:
    """Train a head on the pairs the two stores share (joined by id) and save it at ``out``.

    ``more_pairs``: further (image store, text store) pairs in the same two spaces, sampled in
    equal shares. ``config`` (:class:`TrainConfig`) is what the head is and how it learns, its seed
    included; ``ids`` restricts training to those images (e.g. the train split); ``run``
    (:class:`ComputeOptions`) says where and how it computes: device, threads, checkpoints,
    resuming, progress callbacks. Returns what was done, with
    the loss history (draw it with :func:`stitchkit.report.loss_plot.plot_loss`); the head is
    at ``out``.

    >>> result = train_head("k-lite2.h5", "k-captions-minilm.h5", out="head.st")  # doctest: +SKIP
    """
    cfg = config or TrainConfig()
    run = run or ComputeOptions()
    out = Path(out)
    check_writable_dir(out)
    t0 = time.perf_counter()
    device_name(run.device)  # a GPU that is not there: one line, before the stores are read
    with torch_threads(run.threads):
        pairs = load_pairs([(image_store, text_store), *more_pairs], cfg, ids)
        trainer = Trainer(pairs, cfg, run, out)
        if run.resume:
            trainer.resume()
        resumed_from = trainer.state.epoch
        stopped_early = trainer.fit(run.progress, run.on_epoch)
        _, val = trainer.finish()
    p, st = trainer.pairs, trainer.state
    return TrainResult(
        path=out, n_pairs=len(p.img), n_train=len(p.tr_rows), n_val=len(p.va_rows),
        epochs_run=len(st.history), best_epoch=st.best_epoch, stopped_early=stopped_early,
        resumed_from=resumed_from, history=st.history, val=val,
        seconds=time.perf_counter() - t0, device=str(trainer.dev), precision=cfg.precision,
    )

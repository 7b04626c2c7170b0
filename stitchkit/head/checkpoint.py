"""The checkpoint beside a head in training (``HEAD.ckpt``) and the hash that keys it.

Written at the end of every epoch and, within a long epoch, after ``checkpoint_every``
seconds (:class:`~stitchkit.head.config.ComputeOptions`): the weights, the best weights so far and AdamW's
moments as safetensors tensors; the history, the epoch's steps taken and their losses as JSON;
torch's random generators as they were at that step, and fp16's loss scale. The batches of an
epoch follow from ``(seed, epoch)`` alone (:func:`stitchkit.head.stream.epoch_order`), so a
run resumed at any checkpoint takes the steps an uninterrupted one took. A checkpoint is used
only when a hash of the *whole* training data (every id, global and token of both sides), the
split, the settings and the seed match the current run.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..artifacts import load_artifact, save_artifact
from .data import Side
from .model import CrossAttentionHead, load_numpy_state, state_to_numpy

KIND = "head-checkpoint"
HASH_ROWS = 256  # rows of tokens (4,096 of globals) hashed at a time: never all held


@dataclass
class CheckpointState:
    """Where a run is: epochs finished, steps into the next one, the best weights so far."""

    best: dict[str, np.ndarray]
    fingerprint: str = ""
    history: list[dict[str, float]] = field(default_factory=list)
    best_loss: float = math.inf
    best_epoch: int = 0
    bad: int = 0  # epochs since the validation loss last improved
    epoch: int = 0  # epochs finished
    step: int = 0  # steps of the next epoch taken (a checkpoint within an epoch)
    losses: list[float] = field(default_factory=list)  # their training losses
    rng: dict[str, np.ndarray] | None = None  # torch's generators after those steps


def checkpoint_path(out: Path) -> Path:
    return out.with_name(out.name + ".ckpt")


def _hash_side(h: Any, side: Side, use_tokens: bool) -> None:
    for k in side.ids:
        h.update(str(k).encode())
        h.update(b"\0")
    for a in range(0, len(side), 16 * HASH_ROWS):  # the same bytes as the whole array at once
        h.update(np.ascontiguousarray(side.read_glob(slice(a, a + 16 * HASH_ROWS))).tobytes())
    if use_tokens and side.tokens is not None:
        h.update(np.ascontiguousarray(side.mask).tobytes())
        for a in range(0, len(side), HASH_ROWS):
            rows = np.arange(a, min(a + HASH_ROWS, len(side)))
            h.update(np.ascontiguousarray(side.tokens[rows], dtype=np.float16).tobytes())


def fingerprint(pairs: Any, settings: dict[str, Any], seed: int) -> str:
    """A hash of everything a run depends on: all of both sides' data (``pairs``, a
    :class:`~stitchkit.head.train.Pairs`), the split, the positives, the settings and the seed
    (not just the first rows: a store with a changed row 5,000 must not resume a checkpoint
    made from the old one). Streamed: the data are read once, in blocks."""
    h = hashlib.sha256()
    _hash_side(h, pairs.img, settings["image_tokens"])
    _hash_side(h, pairs.txt, settings["text_tokens"])
    h.update(np.ascontiguousarray(pairs.keys.text).tobytes())
    h.update(np.ascontiguousarray(pairs.keys.own).tobytes())
    h.update(np.ascontiguousarray(pairs.tr_rows).tobytes())
    h.update(repr((settings, seed)).encode())
    return h.hexdigest()[:32]


def rng_state(device: torch.device) -> dict[str, np.ndarray]:
    """torch's generators that training draws from: the CPU's, and the GPU's it runs on."""
    state = {"cpu": torch.get_rng_state().numpy().copy()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device).numpy().copy()
    return state


def restore_rng(state: dict[str, np.ndarray] | None, device: torch.device) -> None:
    if not state:
        return
    torch.set_rng_state(torch.from_numpy(state["cpu"].copy()))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(torch.from_numpy(state["cuda"].copy()), device)


def save_checkpoint(path: Path, model: CrossAttentionHead, opt: torch.optim.Optimizer,
                    scaler: Any, state: CheckpointState) -> None:
    """Write ``state`` with the model, AdamW's moments and fp16's loss scale, atomically."""
    tensors = state_to_numpy(model, "model.")
    tensors.update({"best." + k: v for k, v in state.best.items()})
    tensors.update({"rng." + k: v for k, v in (state.rng or {}).items()})
    steps = []
    for i, p in enumerate(model.parameters()):
        st = opt.state.get(p, {})
        if "exp_avg" in st:
            tensors[f"optim.{i}.exp_avg"] = st["exp_avg"].detach().cpu().numpy().copy()
            tensors[f"optim.{i}.exp_avg_sq"] = st["exp_avg_sq"].detach().cpu().numpy().copy()
            steps.append(float(st["step"]))
    save_artifact(path, KIND, tensors, {
        "fingerprint": state.fingerprint, "epoch": state.epoch, "history": state.history,
        "best_loss": state.best_loss, "best_epoch": state.best_epoch, "bad_epochs": state.bad,
        "step": state.step, "epoch_losses": state.losses, "optim_steps": steps,
        "scaler": scaler.state_dict() if scaler is not None else None,
    })


def load_checkpoint(path: Path, model: CrossAttentionHead, opt: torch.optim.Optimizer,
                    scaler: Any) -> CheckpointState:
    """Load a checkpoint into ``model``, ``opt`` (and ``scaler``); return where the run was."""
    tensors, meta = load_artifact(path, KIND)
    load_numpy_state(model, {k: v for k, v in tensors.items() if k.startswith("model.")}, "model.")
    steps = meta.get("optim_steps", [])
    for i, p in enumerate(model.parameters()):
        if f"optim.{i}.exp_avg" in tensors and i < len(steps):
            opt.state[p] = {
                "step": torch.tensor(steps[i]),
                "exp_avg": torch.from_numpy(tensors[f"optim.{i}.exp_avg"].copy()).to(p.device),
                "exp_avg_sq": torch.from_numpy(tensors[f"optim.{i}.exp_avg_sq"].copy()).to(p.device),
            }
    if scaler is not None and meta.get("scaler"):
        scaler.load_state_dict(meta["scaler"])
    rng = {k[len("rng."):]: v for k, v in tensors.items() if k.startswith("rng.")}
    return CheckpointState(
        best={k[len("best."):]: v for k, v in tensors.items() if k.startswith("best.")},
        fingerprint=meta.get("fingerprint", ""), history=meta["history"], best_loss=meta["best_loss"],
        best_epoch=meta["best_epoch"], bad=meta["bad_epochs"], epoch=meta["epoch"],
        step=int(meta.get("step", 0)), losses=list(meta.get("epoch_losses", [])), rng=rng or None,
    )

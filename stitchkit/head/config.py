"""A head's settings, declared once: its shape, its training and where the training computes.

`stitch head train` generates its options from these fields (``cli/settings.py``), and a head
file stores the first two (:meth:`TrainConfig.to_dict`), so a head says how it was made.
Nothing here imports torch: the command line reads these without it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ..devices import DEVICE_HELP, PRECISION_HELP, PRECISIONS
from ..errors import UsageError
from ..settings import Range, check_settings, setting

INITS = ("carzero", "torch")
#: What a head written before these settings existed was built with.
LEGACY_SETTINGS = {"residual": False, "init": "torch"}
ProgressFn = Callable[[int, int], None]


def known_settings(cls: type, data: dict[str, Any], where: object) -> dict[str, Any]:
    """``data`` if every key is a field of the dataclass ``cls``; else a one-line error."""
    unknown = sorted(set(data) - {f.name for f in fields(cls)})
    if unknown:
        raise UsageError(f"{where}: {cls.__name__} setting{'s' if len(unknown) > 1 else ''} "
                         f"{', '.join(map(repr, unknown))} unknown to this stitchkit "
                         "(written by a newer stitchkit?): upgrade stitchkit")
    return dict(data)


@dataclass(frozen=True)
class HeadConfig:
    """Shape of a head. The defaults train on two CPU cores in a few minutes."""

    width: int = setting(64, "Head width (projection size).", within=Range(1))
    layers: int = setting(1, "Cross-attention decoder layers.", within=Range(1))
    heads: int = setting(4, "Attention heads per layer.", within=Range(1))
    ffn_mult: int = 2
    dropout: float = setting(0.1, "Dropout in attention and feed-forward (CARZero's).",
                             within=Range(0.0, 1.0, open_max=True))
    logit_mlp: bool = setting(False, "A small MLP instead of a linear layer per logit.")
    residual: bool = setting(
        True, "Start the head as the cosine route of its pairs (a ridge map into the text space) and "
        "learn a correction to it; --no-residual learns the similarity from scratch.")
    init: str = setting("carzero", "Weight initialisation: CARZero's N(0, 0.02), or PyTorch's defaults.",
                        choices=INITS)

    def __post_init__(self) -> None:
        check_settings(self)
        if self.ffn_mult < 1:
            raise UsageError(f"head ffn_mult must be at least 1, got {self.ffn_mult}")
        if self.width % self.heads:
            raise UsageError(
                f"head width {self.width} is not divisible by {self.heads} attention heads: "
                "choose a width that is a multiple of --heads"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: object = "head") -> HeadConfig:
        """The config :meth:`to_dict` wrote. A setting this stitchkit does not know is refused,
        never dropped: a head built without a part it was trained with would score wrongly.
        Settings added later take the value heads had before them (``LEGACY_SETTINGS``)."""
        return cls(**{**LEGACY_SETTINGS, **known_settings(cls, data, where)})


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings; ``head`` is the shape of the head."""

    head: HeadConfig = field(default_factory=HeadConfig)
    epochs: int = setting(30, "Epochs (more where --min-steps needs them).", within=Range(1))
    batch_size: int = setting(128, "Pairs per contrastive batch at most (an eighth of the training pairs, "
                              "at least 16).", within=Range(2))
    min_steps: int = setting(300, "Training steps at least, whatever the number of pairs.", within=Range(0))
    candidates: int = setting(4, "Evenly spaced checkpoints (and the start) among which the validation "
                              "loss chooses the head.", within=Range(1))
    lr: float = setting(1e-3, "Peak AdamW learning rate.")
    weight_decay: float = setting(0.01, "AdamW's weight decay.", within=Range(0.0))
    warmup: float = setting(0.05, "Fraction of steps warming up, then cosine.", within=Range(0.0, 1.0))
    val_fraction: float = setting(0.1, "Pairs held out for validation (by group where the images have "
                                  "groups).", within=Range(0.0, 0.9, open_max=True))
    patience: int = setting(0, "Stop after this many checkpoints without a better validation loss "
                            "(0: never).", within=Range(0))
    image_tokens: bool = setting(True, "Use the image store's tokens where it has them "
                                 "(--no-image-tokens: global vectors only).")
    text_tokens: bool = setting(True, "Use the text store's tokens where it has them "
                                "(--no-text-tokens: global vectors only).")
    pool_by: str | None = setting(None, "Pool the views of one group (study) into one sample.",
                                  choices=("group",), none="none")
    # A fresh draw per step; the global always stays: the head must not lean on any single
    # token's detail, which a map from another model carries least well.
    token_dropout: float = setting(0.0, "Share of image tokens masked at random in each training batch.",
                                   within=Range(0.0, 1.0, open_max=True))
    # Area-weighted down, bilinear up (9x9 → 7x7 → 9x9): queries mapped from a model with a
    # coarser grid arrive without the finest spatial detail.
    token_coarsen: float = setting(
        0.0, "Share of training batches whose image-token grid is shrunk by 2 and resampled back (robust "
        "to a coarser query grid, e.g. Lite0's 7x7 mapped onto Lite2's 9x9).", within=Range(0.0, 1.0))
    precision: str = setting("fp32", PRECISION_HELP, choices=PRECISIONS)
    # The epoch's order (stitchkit.head.stream): blocks of shuffle_block consecutive rows,
    # shuffled, then rows shuffled within windows of shuffle_buffer rows.
    shuffle_block: int = 16
    shuffle_buffer: int = setting(
        1024, "Rows shuffled together: each epoch shuffles blocks of 16 consecutive rows of the stores, "
        "then rows within windows of this many (up to this many pairs: a plain shuffle).", within=Range(1))
    seed: int = setting(0, "Seed for initialisation, split, shuffling.")

    def __post_init__(self) -> None:
        check_settings(self)
        if self.lr <= 0:
            raise UsageError(f"lr must be positive, got {self.lr}")
        if self.shuffle_block < 1 or self.shuffle_buffer < self.shuffle_block or \
                self.shuffle_buffer % self.shuffle_block:
            raise UsageError(f"shuffle buffer ({self.shuffle_buffer} rows) must be a multiple of the "
                             f"shuffle block ({self.shuffle_block} rows, at least 1)")

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


@dataclass(frozen=True)
class ComputeOptions:
    """Where and how a run computes; none of it changes the head (on one kind of device).

    ``checkpoint_every``: seconds; besides the checkpoint at every epoch's end, one within an
    epoch once this long has passed since the last (a resumed run continues from that step).
    ``prefetch``: batches the loader thread keeps ready. ``progress(done, total)`` is called as
    steps finish, ``on_epoch(record)`` after each epoch.
    """

    device: str = setting("auto", DEVICE_HELP)
    threads: int | None = setting(None, "torch threads (default: torch's choice); restored afterwards.",
                                  within=Range(1))
    checkpoint_every: float = setting(600.0, "Seconds between checkpoints within an epoch (one is written "
                                      "at every epoch's end too).", within=Range(0.0))
    resume: bool = setting(True, "Continue from a checkpoint beside the output (--no-resume: start over).")
    prefetch: int = 4
    progress: ProgressFn | None = None
    on_epoch: Callable[[dict[str, float]], None] | None = None

    def __post_init__(self) -> None:
        check_settings(self)

"""What an embedding run takes besides its inputs, its encoder and its output, declared once.

:class:`EmbedOptions` goes to :func:`stitchkit.embed.embed_store` and to the Ray engine,
:class:`EncoderOptions` to :func:`stitchkit.encoders.load_encoder`'s caller, :class:`RayOptions`
to :func:`stitchkit.engines.ray_engine.embed_store_ray`; `stitch embed` generates its options
from them. Nothing here imports torch: the command line reads these without it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .devices import DEVICE_HELP
from .errors import UsageError
from .settings import Range, check_settings, setting

RUNTIMES = ("auto", "torch", "onnx")
DTYPES = ("float32", "float16", "bfloat16")


@dataclass(frozen=True)
class EmbedOptions:
    """How the inputs are batched and written; ``shard=(i, n)`` embeds the i-th of n shards.
    ``progress`` (a :class:`~stitchkit.embed.ProgressSink`) follows the batches written;
    ``on_failure(id, reason)`` hears of each unreadable input (else a warning)."""

    batch_size: int = setting(64, "Samples per forward pass.", within=Range(1))
    workers: int | None = setting(
        None, "Processes decoding and preparing images while the forward pass runs (0: in the main process, "
        "between batches). auto: the CPU cores the forward pass leaves free (at most 8), at least one per 4 of "
        "its threads. Workers that share the forward's cores run at lower priority (nice +10), on what it "
        "leaves idle (docs/speed.md).",
        within=Range(0), none="auto")
    tokens: bool = setting(False, "Also keep patch / word tokens (N, T, D) with a mask.")
    token_grid: str | None = setting(
        None, "With --tokens: average the patch tokens onto an HxW grid as they are embedded, e.g. 4x4 "
        "(Lite0's 7x7 or a ViT's 37x37 stored as 16 tokens; the global vector is unchanged). At most the "
        "model's grid, square; a size that does not divide it weights each cell by its overlap "
        "(area-weighted, keeping the grid's mean), unlike adaptive_avg_pool2d's overlapping whole cells.",
        none="full")
    strict: bool = setting(False, "Stop at the first unreadable input instead of recording it.")
    overwrite: bool = setting(False, "Replace an existing store from another run (kept until the new one "
                              "is complete).")
    shard: tuple[int, int] | None = None
    progress: Any = None
    on_failure: Callable[[str, str], None] | None = None

    def __post_init__(self) -> None:
        check_settings(self)
        if self.token_grid is not None:
            parse_token_grid(self.token_grid)
            if not self.tokens:
                raise UsageError(f"token_grid (--token-grid {self.token_grid}) pools stored tokens: add --tokens")

    @property
    def token_side(self) -> int | None:
        """The side of the square grid tokens are pooled onto (None: the model's grid)."""
        return None if self.token_grid is None else parse_token_grid(self.token_grid)[0]


def parse_token_grid(text: str) -> tuple[int, int]:
    """``"4x4"`` → (4, 4): a token grid as ``--token-grid`` and a store's ``token_grid`` spell it.
    Square only: maps, heads and ``stitch explain`` pair square patch grids."""
    found = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", str(text))
    if found is None:
        raise UsageError(f"token_grid (--token-grid) takes HxW, e.g. 4x4, got {text!r}")
    h, w = int(found.group(1)), int(found.group(2))
    if h < 1 or h != w:
        raise UsageError(f"token_grid (--token-grid) {text!r}: give a square grid of at least 1x1, e.g. 4x4 "
                         "(maps, heads and explain pair square patch grids)")
    return h, w


@dataclass(frozen=True)
class EncoderOptions:
    """Where and how the encoder runs (:func:`stitchkit.encoders.load_encoder`'s settings)."""

    device: str = setting("auto", DEVICE_HELP + " On a GPU the forward runs on torch (--runtime auto picks "
                          "it: ONNX Runtime here is the CPU build); a GPU that is not there is refused, never "
                          "replaced by the CPU.")
    dtype: str = setting("float32", "Precision of the forward pass.", choices=DTYPES)
    runtime: str = setting("auto", "What runs the forward pass: onnx = ONNX Runtime (timm image encoders such "
                           "as lite0 and lite2, on the CPU in float32; exported once into $STITCHKIT_CACHE/onnx); "
                           "auto = onnx where it can run, else torch.", choices=RUNTIMES)

    def __post_init__(self) -> None:
        check_settings(self)


@dataclass(frozen=True)
class RayOptions:
    """Where a Ray embedding runs: a cluster ``address`` (else a local Ray of ``ray_cpus``
    CPUs) and how many model replicas (``actors``)."""

    address: str | None = setting(None, "With --engine ray: join the Ray cluster at this address (else start "
                                  "a local Ray).")
    ray_cpus: int | None = setting(None, "With --engine ray and no --address: CPUs of the local Ray [all].",
                                   within=Range(1))
    actors: int | None = setting(None, "With --engine ray: model replicas [one per GPU, else one per node].",
                                 within=Range(1))

    def __post_init__(self) -> None:
        check_settings(self)

    def given(self) -> list[str]:
        """The options set, as the command line names them (they need --engine ray)."""
        return [f"--{name.replace('_', '-')}" for name, value in
                (("address", self.address), ("ray_cpus", self.ray_cpus), ("actors", self.actors))
                if value is not None]

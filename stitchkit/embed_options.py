"""What an embedding run takes besides its inputs, its encoder and its output, declared once.

:class:`EmbedOptions` goes to :func:`stitchkit.embed.embed_store` and to the Ray engine,
:class:`EncoderOptions` to :func:`stitchkit.encoders.load_encoder`'s caller, :class:`RayOptions`
to :func:`stitchkit.engines.ray_engine.embed_store_ray`; `stitch embed` generates its options
from them. Nothing here imports torch: the command line reads these without it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .devices import DEVICE_HELP
from .settings import Range, check_settings, setting

RUNTIMES = ("auto", "torch", "onnx")
DTYPES = ("float32", "float16", "bfloat16")


@dataclass(frozen=True)
class EmbedOptions:
    """How the inputs are batched and written; ``shard=(i, n)`` embeds the i-th of n shards.
    ``progress`` (a :class:`~stitchkit.embed.ProgressSink`) follows the batches written;
    ``on_failure(id, reason)`` hears of each unreadable input (else a warning)."""

    batch_size: int = setting(64, "Samples per forward pass.", within=Range(1))
    workers: int = setting(1, "DataLoader worker processes decoding images.", within=Range(0))
    tokens: bool = setting(False, "Also keep patch / word tokens (N, T, D) with a mask.")
    strict: bool = setting(False, "Stop at the first unreadable input instead of recording it.")
    overwrite: bool = setting(False, "Replace an existing store from another run (kept until the new one "
                              "is complete).")
    shard: tuple[int, int] | None = None
    progress: Any = None
    on_failure: Callable[[str, str], None] | None = None

    def __post_init__(self) -> None:
        check_settings(self)


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

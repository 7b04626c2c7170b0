"""Where torch work runs: one reading of ``--device`` for every command, and training precision.

``--device`` takes ``auto`` (the current GPU when torch sees one, else the CPU), ``cpu``,
``cuda`` or ``cuda:N``. A GPU asked for where none is visible is one line (exit 2), never a
silent run on the CPU. ``stitch embed``, ``stitch head train``, ``stitch classify`` and
``stitch apply`` all resolve it here.

Resolving ``auto`` does not import torch where no GPU driver is present: torch takes seconds
to import, and `stitch apply` or cosine `stitch classify` need it for nothing else.

Precision (``--precision``, head training): ``fp32``, or ``bf16`` / ``fp16`` under
:func:`torch.autocast` (the loss, the weights and the saved head stay float32). ``fp16`` runs on
a GPU only, with loss scaling.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import sys
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import UsageError

if TYPE_CHECKING:
    import torch

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"
PRECISIONS = ("fp32", "bf16", "fp16")
#: Where a job computes: this process, or Ray (`--engine` of `stitch embed` and `stitch fit`;
#: the Ray engines live in stitchkit.engines, which the library never imports).
ENGINES = ("local", "ray")
DEVICE_HELP = "Where torch runs: auto (a GPU when one is visible, else the CPU), cpu, cuda or cuda:N."
PRECISION_HELP = ("Forward pass under torch.autocast in bf16 or fp16 (fp16: GPU only, loss scaled); the "
                  "loss, the weights and the saved head stay float32.")
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def check_device(device: str | None) -> str:
    """``device`` (None is ``auto``) if it is one of the accepted spellings, else one line."""
    text = "auto" if device is None else str(device).strip().lower()
    if not _DEVICE.match(text):
        raise UsageError(f"--device {device!r}: use {DEVICE_CHOICES}")
    return text


def _driver_present() -> bool:
    """Whether a GPU driver is loaded at all (NVIDIA, or ROCm's kernel driver)."""
    return any(os.path.exists(p) for p in ("/proc/driver/nvidia/version", "/dev/nvidiactl", "/dev/kfd"))


def device_name(device: str | None = "auto") -> str:
    """``device`` resolved to ``"cpu"`` or ``"cuda:N"``; a GPU that is not there is refused."""
    text = check_device(device)
    if text == "cpu":
        return "cpu"
    if text == "auto" and "torch" not in sys.modules and not _driver_present():
        return "cpu"  # no driver: torch could see no GPU either, so it need not be imported
    import torch

    if not torch.cuda.is_available():
        if text == "auto":
            return "cpu"
        raise UsageError(f"--device {text} asked for but no CUDA device is visible "
                         "(torch.cuda.is_available() is False): use --device cpu or auto")
    count = torch.cuda.device_count()
    index = int(text.split(":")[1]) if ":" in text else torch.cuda.current_device()
    if index >= count:
        raise UsageError(f"--device {text}: this machine shows {count} CUDA device(s), "
                         f"cuda:0 to cuda:{count - 1}")
    return f"cuda:{index}"


def resolve_device(device: str | None = "auto") -> torch.device:
    """``device`` as a :class:`torch.device` (see :func:`device_name`)."""
    import torch

    return torch.device(device_name(device))


def check_precision(precision: str, device: torch.device) -> None:
    """Refuse a precision this stitchkit does not know, and fp16 on the CPU (one line each)."""
    if precision not in PRECISIONS:
        raise UsageError(f"--precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    if precision == "fp16" and device.type == "cpu":
        raise UsageError("--precision fp16 needs a GPU (float16 matrix products on the CPU are "
                         "emulated, and it needs loss scaling): use bf16 or fp32 on the CPU")


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    """The forward pass's context: torch.autocast in bf16 / fp16, nothing in fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    import torch

    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def device_record(device: torch.device | str, precision: str | None = None) -> dict[str, Any]:
    """What provenance records of where a computation ran (device, its name, precision)."""
    name = str(device)
    record: dict[str, Any] = {"device": name}
    if name.startswith("cuda"):
        import torch

        record["device_name"] = torch.cuda.get_device_name(torch.device(name))
    if precision is not None:
        record["precision"] = precision
    return record


class DeviceMap:
    """A fitted map whose ``transform`` runs on a GPU with torch (float32, as the map's own).

    Everything else (spaces, widths, ``l2``) is the wrapped map's. The CPU keeps the map's
    numpy path (:func:`on_device` returns the map itself there), so ``--device cpu`` gives
    exactly what no ``--device`` gave before.
    """

    def __init__(self, mapper: Any, device: torch.device) -> None:
        import torch

        self._map = mapper
        self.device = device
        self._matrix = torch.as_tensor(np.asarray(mapper.matrix_, dtype=np.float32), device=device)
        self._offset = torch.as_tensor(np.asarray(mapper.offset_, dtype=np.float32), device=device)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._map, name)

    def transform(self, X: np.ndarray) -> np.ndarray:
        import torch

        self._map._check_fitted()
        X = self._map._check_width(X, self._map.n_features_in_, "source")
        z = torch.as_tensor(np.ascontiguousarray(X, dtype=np.float32)).to(self.device)
        if self._map.l2:
            z = z / torch.linalg.vector_norm(z, dim=-1, keepdim=True).clamp_min(1e-12)
        out = torch.addmm(self._offset, z, self._matrix)
        return out.cpu().numpy()


def on_device(mapper: Any, device: str) -> Any:
    """``mapper`` itself on the CPU; on a GPU a :class:`DeviceMap` around it."""
    if device == "cpu":
        return mapper
    return DeviceMap(mapper, resolve_device(device))


@contextlib.contextmanager
def torch_threads(n: int | None):
    """torch computes on ``n`` threads inside the block (as it did before when ``n`` is None),
    and on as many as before after it: a library call leaves its caller's thread count alone."""
    import torch

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# glibc hands freed memory back to the system as soon as a little is free at the top of its
# heap, and serves blocks above its (moving) threshold by mmap: a loop that allocates and frees
# the same tens of MB per block (torch's intermediates in a head's forward on 161 Lite2 rows)
# then pays their page faults on every block. Kept: up to HEAP_KEEP_BYTES freed, blocks up to
# glibc's largest heap threshold (32 MB) from the heap. Measured in classify's loop (20,000
# rows, docs/speed.md): the forward 37-41 ms a block before, 32-33 ms after; 28.6 ms alone.
HEAP_KEEP_BYTES = 512 << 20
HEAP_BLOCK_BYTES = 32 << 20
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


@functools.cache
def keep_freed_heap() -> bool:
    """Let glibc's malloc keep freed memory for reuse (process-wide, once); False where the C
    library is not glibc. The memory kept is bounded (HEAP_KEEP_BYTES) and reused, never grown
    per block."""
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, HEAP_BLOCK_BYTES)) and bool(mallopt(_M_TRIM_THRESHOLD, HEAP_KEEP_BYTES))

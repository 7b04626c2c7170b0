"""ONNX Runtime for image encoders: the same torch model, exported once, run by ORT's CPU EP.

On this project's 2-core CPU, ONNX Runtime runs EfficientNet-Lite's forward at several times the
images/s of torch eager (docs/speed.md), with embeddings equal to cosine 0.9999998. An encoder
opts in by listing ``"onnx"`` in its ``runtimes`` and building an :class:`OnnxForward` from its
torch module (anything with timm's ``forward_features`` / ``forward_head``).

The graph has one input (``pixels``, NCHW float32, dynamic batch) and two outputs: ``pooled``
(what ``forward_head(pre_logits=True)`` gives) and ``features`` (the last feature map, which
``--tokens`` keeps). One graph serves both: a run that asks only for ``pooled`` does not copy the
map out. It is exported once per architecture + graph options, weights (sha256), input size,
opset and torch / timm versions into ``$STITCHKIT_CACHE/onnx`` (else ``~/.cache/stitchkit/onnx``),
checked against torch on a fixed input before it is moved into place, so the cache never holds a
half-written or a wrong graph.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib.util
import json
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..embed_options import RUNTIMES
from ..errors import ModelError, UsageError
from ..fileio import atomic_output, cache_root

if TYPE_CHECKING:
    from .base import Encoder

OPSET = 17
PROVIDER = "CPUExecutionProvider"
# Export checked against torch on a fixed input: both outputs within this cosine per row.
CHECK_COSINE = 0.99999


class OnnxUnavailable(ModelError):
    """The ONNX path cannot run here (export failed, or the graph disagrees with torch)."""


def available() -> bool:
    """Whether ONNX Runtime can be imported (the ``models`` extra installs it)."""
    return importlib.util.find_spec("onnxruntime") is not None


def cache_dir() -> Path:
    return cache_root() / "onnx"


def check_runtime(runtime: str) -> None:
    if runtime not in RUNTIMES:
        raise UsageError(f"unknown --runtime {runtime!r}: use one of {', '.join(RUNTIMES)}")


def refuse_onnx(encoder_cls: type, spec_text: str, backend: str) -> None:
    """Say, before a model is loaded, that an explicit ``--runtime onnx`` cannot run this spec."""
    if "onnx" not in getattr(encoder_cls, "runtimes", ("torch",)):
        raise UsageError(
            f"--runtime onnx runs timm image encoders (lite0, lite2, timm:...); {spec_text!r} "
            f"({backend} backend) runs on torch only: use --runtime torch (or auto)"
        )
    if not available():
        raise UsageError(
            "--runtime onnx needs onnxruntime: pip install 'stitchkit[models]' "
            "(onnxruntime==1.32.0), or use --runtime torch"
        )


def select_runtime(encoder: Encoder, requested: str) -> str:
    """Switch ``encoder`` to the runtime ``requested`` names and return the one it runs.

    ``auto`` is ONNX Runtime where the encoder supports it, ORT is importable, the model runs on
    the CPU in float32 and the export checks out; else torch (with a warning when an export that
    should have worked did not). An explicit ``onnx`` that cannot run is one clear error.
    """
    check_runtime(requested)
    encoder.runtime_requested = requested
    if requested == "torch":
        encoder.set_runtime("torch")
        return "torch"
    reason = _why_not(encoder)
    if reason is not None:
        if requested == "onnx":
            raise UsageError(f"--runtime onnx: {reason}")
        encoder.set_runtime("torch")
        return "torch"
    try:
        encoder.set_runtime("onnx")
    except OnnxUnavailable as exc:
        if requested == "onnx":
            raise UsageError(f"--runtime onnx: {exc}; use --runtime torch") from exc
        warnings.warn(f"{encoder.spec.text}: running on torch: {exc}", stacklevel=2)
        encoder.set_runtime("torch")
    return encoder.runtime


def _why_not(encoder: Encoder) -> str | None:
    spec = encoder.spec
    if "onnx" not in encoder.runtimes:
        return (f"it runs timm image encoders (lite0, lite2, timm:...); {spec.text!r} "
                f"({spec.backend} backend) runs on torch only: use --runtime torch")
    if not available():
        return "onnxruntime is not installed: pip install 'stitchkit[models]', or use --runtime torch"
    if encoder.device.type != "cpu":
        return (f"it runs on the CPU (ONNX Runtime's CPU provider), not {encoder.device}: use "
                "--device cpu, or --runtime torch")
    if encoder.dtype != torch.float32:
        return f"it runs float32 graphs, not {encoder.dtype}: use --dtype float32, or --runtime torch"
    return None


class _PooledAndFeatures(torch.nn.Module):
    """The graph exported: (pooled, last feature map), as the torch path computes them."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.model.forward_features(x)
        return self.model.forward_head(feats, pre_logits=True), feats


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"torch": torch.__version__}
    for name in ("timm", "onnxruntime"):
        with contextlib.suppress(PackageNotFoundError):
            out[name] = version(name)
    return out


class OnnxForward:
    """A cached ONNX export of ``model`` and the ORT session that runs it.

    ``identity`` names what defines the graph besides the input size (architecture, graph
    options such as BatchNorm eps, the weights' sha256). The session uses ``threads``
    intra-op threads (default: torch's thread count, what the torch path would use) and one
    inter-op thread. Pickles without its session (DataLoader / Ray workers that only prepare
    inputs); a copy that runs opens the cached file again.
    """

    def __init__(self, model: torch.nn.Module, input_size: tuple[int, int, int], identity: dict[str, Any],
                 *, threads: int | None = None, folder: Path | None = None) -> None:
        self.input_size = tuple(int(v) for v in input_size)
        self.threads = int(threads or torch.get_num_threads())
        key = json.dumps({**identity, "input_size": self.input_size, "opset": OPSET,
                          "exporter": "torchscript", **_versions()}, sort_keys=True)
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        name = str(identity.get("arch", "model")).replace(":", "_").replace("/", "_")
        _, h, w = self.input_size
        self.path = (folder or cache_dir()) / f"{name}-{h}x{w}-{digest}.onnx"
        self.export_seconds: float | None = None  # None: the graph came from the cache
        self._session: Any = None
        if not self.path.exists():
            self.export_seconds = self._export(model)
        else:
            try:
                self._open()
            except Exception:  # noqa: BLE001 - an unreadable cache entry is re-exported
                self.export_seconds = self._export(model)

    def _export(self, model: torch.nn.Module) -> float:
        t0 = time.perf_counter()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            folder_ok = os.access(self.path.parent, os.W_OK)
        except OSError:
            folder_ok = False
        if not folder_ok:  # read-only cache: export for this process only
            self.path = Path(tempfile.mkdtemp(prefix="stitchkit-onnx-")) / self.path.name
        # A copy in NCHW float32 on the CPU: the encoder's own stays channels_last for torch.
        module = copy.deepcopy(_PooledAndFeatures(model).eval()).to(device="cpu", dtype=torch.float32,
                                          memory_format=torch.contiguous_format)
        probe = torch.randn((2, *self.input_size), generator=torch.Generator().manual_seed(0))
        with atomic_output(self.path) as tmp:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # the exporter's notes are not the user's business
                    torch.onnx.export(
                        module, (probe,), str(tmp), input_names=["pixels"],
                        output_names=["pooled", "features"], opset_version=OPSET, dynamo=False,
                        dynamic_axes={"pixels": {0: "batch"}, "pooled": {0: "batch"}, "features": {0: "batch"}},
                    )
            except Exception as exc:  # noqa: BLE001 - any exporter failure means "use torch"
                raise OnnxUnavailable(f"the ONNX export failed ({type(exc).__name__}: {exc})") from exc
            self._open(tmp)
            with torch.inference_mode():
                want = [t.numpy() for t in module(probe)]
            got = self._session.run(["pooled", "features"], {"pixels": probe.numpy()})
            for label, a, b in zip(("pooled", "features"), want, got, strict=True):
                cos = _row_cosine(a.reshape(len(a), -1), b.reshape(len(b), -1))
                if cos < CHECK_COSINE:
                    raise OnnxUnavailable(f"the ONNX graph's {label} output differs from torch's "
                                          f"(cosine {cos:.6f})")
        return time.perf_counter() - t0

    def _open(self, path: Path | None = None) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        # Idle intra-op threads sleep instead of spinning: the DataLoader workers decoding the next
        # batch need those cores (lite0 --tokens pipeline, 128 Kermany images, three alternations
        # on the shared 2-core machine: 20.1-22.8 images/s without spinning, 16.9-19.7 with).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(str(path or self.path), opts, providers=[PROVIDER])

    def run(self, batch: torch.Tensor | np.ndarray, *, tokens: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(pooled (B, D), feature map or None) for an NCHW float32 batch."""
        if self._session is None:
            self._open()
        x = batch.detach().cpu().float().numpy() if isinstance(batch, torch.Tensor) else batch
        x = np.ascontiguousarray(x, dtype=np.float32)  # ORT reads NCHW; channels_last is a view
        if tuple(x.shape[1:]) != self.input_size:
            raise ModelError(f"the ONNX graph takes {self.input_size} inputs, got {tuple(x.shape[1:])}")
        if not tokens:
            (pooled,) = self._session.run(["pooled"], {"pixels": x})
            return torch.from_numpy(pooled), None
        pooled, feats = self._session.run(["pooled", "features"], {"pixels": x})
        return torch.from_numpy(pooled), torch.from_numpy(feats)

    def info(self) -> dict[str, Any]:
        """The runtime as the store's provenance records it."""
        import onnxruntime as ort

        return {"name": "onnx", "onnxruntime": ort.__version__, "provider": PROVIDER,
                "opset": OPSET, "graph": self.path.name}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_session": None}


class OnnxRuntimeMixin:
    """ONNX Runtime for an :class:`~stitchkit.encoders.base.Encoder` whose ``self.model`` has
    timm's ``forward_features`` / ``forward_head``: put it first among the bases, give the two
    ``onnx_*`` hooks, and begin ``encode`` with ``if self.runtime == "onnx": return
    self.onnx_encode(batch, tokens)``; the torch path stays as it was."""

    runtimes = ("torch", "onnx")
    _onnx: OnnxForward | None = None  # exported on the first set_runtime("onnx")

    def onnx_input_size(self) -> tuple[int, int, int]:
        """(C, H, W) of what ``prepare`` gives."""
        raise NotImplementedError

    def onnx_identity(self) -> dict[str, Any]:
        """What defines the graph besides the input size: architecture, graph options, weights."""
        raise NotImplementedError

    def set_runtime(self, runtime: str) -> None:
        if runtime == "onnx" and self._onnx is None:
            self._onnx = OnnxForward(self.model, self.onnx_input_size(), self.onnx_identity())
        super().set_runtime(runtime)  # type: ignore[misc]

    def runtime_info(self) -> dict[str, Any]:
        if self.runtime == "onnx" and self._onnx is not None:
            return {**self._onnx.info(), "device": "cpu", "dtype": "float32"}
        return super().runtime_info()  # type: ignore[misc]

    @property
    def export_seconds(self) -> float | None:
        return self._onnx.export_seconds if self.runtime == "onnx" and self._onnx else None

    def forward_threads(self) -> int:
        if self.runtime == "onnx" and self._onnx is not None:
            return self._onnx.threads  # the session's intra-op threads
        return super().forward_threads()  # type: ignore[misc]

    def onnx_encode(self, batch: torch.Tensor, tokens: bool) -> Any:
        from .base import EncodeOutput, with_patch_tokens

        pooled, feats = self._onnx.run(batch, tokens=tokens)
        if feats is None:
            return EncodeOutput(pooled)
        return with_patch_tokens(pooled, feats, getattr(self.model, "num_prefix_tokens", 0))


def _row_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    num = (a * b).sum(axis=1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    # Rows of zeros (a dead ReLU channel map) agree when both are zero.
    cos = np.where(den > 0, num / np.maximum(den, 1e-300), np.where(np.abs(a - b).sum(axis=1) == 0, 1.0, 0.0))
    return float(cos.min())

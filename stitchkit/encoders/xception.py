"""Keras's ImageNet Xception, read from a Keras 3 ``.keras`` file into timm's ``legacy_xception``.

The weights ship in ``pneumonia-model-package`` (see :func:`packaged.xception_weights`): a
Keras 3 zip of ``config.json`` and ``model.weights.h5``. Its Xception backbone is Keras's
frozen ImageNet Xception; only the dense layers after the global pooling were trained (on
Kermany), and those are never read here: the encoder gives the pooled 2048-d features.

No TensorFlow or Keras is needed: the zip is read with :mod:`zipfile`, the weights with h5py.
Three things make timm's port differ from Keras's forward and are fixed when loading:

* BatchNorm eps: Keras uses 1e-3 (read from each layer's config), timm 1e-5.
* Max pooling: Keras pools 3x3 / stride 2 with TF "same" padding, which on an even input
  pads only after (0, 1); timm's ``MaxPool2d(3, 2, 1)`` pads both sides, which shifts every
  window by one pixel. At 150 px the pools of blocks 2-4 see 72, 36 and 18 px inputs (even),
  so the pools are swapped for TF-"same" ones.
* Weight layouts: Keras kernels are (kh, kw, in, out), depthwise (kh, kw, in, 1).
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ModelError
from .base import EncodeOutput, Encoder, ModelSpec
from .onnx_runtime import OnnxRuntimeMixin
from .specs import Choice, Integer, Option, Text

# What `pneumonia-model-package` trained with: ImageDataGenerator.flow_from_dataframe at
# target_size (150, 150), whose default interpolation is "nearest", then
# keras.applications.xception.preprocess_input (x / 127.5 - 1).
TRAINED_SIZE = 150
TRAINED_INTERPOLATION = "nearest"
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")

# Keras 3 names the layers inside model.weights.h5 by class, numbered in layer order
# (saving_lib: snake_case(class name), then _1, _2, ...), not by their config names.
_H5_CLASS_NAMES = {
    "Conv2D": "conv2d",
    "SeparableConv2D": "separable_conv2d",
    "BatchNormalization": "batch_normalization",
}


def _inbound(layer: dict[str, Any]) -> list[str]:
    """Names of the layers feeding a functional-model layer (Keras 3 config format)."""
    names: list[str] = []
    for node in layer.get("inbound_nodes", []):
        args = node["args"][0]
        for arg in args if isinstance(args, list) else [args]:
            names.append(arg["config"]["keras_history"][0])
    return names


def read_keras_file(path: str | Path) -> tuple[dict[str, Any], dict[str, list[np.ndarray]]]:
    """The Xception sub-model's config and its weights, keyed by Keras layer name.

    Only the nested model named ``xception`` is read; the head after it is left alone.
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"Keras file {path} does not exist: check ?weights= or run `make xception`")
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
            h5_bytes = archive.read("model.weights.h5")
    except (zipfile.BadZipFile, KeyError) as exc:
        raise ModelError(
            f"{path} is not a Keras 3 .keras file (a zip of config.json and model.weights.h5): {exc}"
        ) from exc
    top = config["config"]["layers"]
    subs = [i for i, layer in enumerate(top) if layer["config"].get("name") == "xception"]
    if len(subs) != 1 or top[subs[0]]["class_name"] != "Functional":
        raise ModelError(f"{path} holds no nested Keras model named 'xception'")
    # The nested model is the only Functional layer of the outer model, so h5 calls it "functional".
    functional = [layer for layer in top if layer["class_name"] == "Functional"]
    h5_model = "functional" if len(functional) == 1 else None
    if h5_model is None:
        raise ModelError(f"{path}: expected one nested model, found {len(functional)}")
    xcfg = top[subs[0]]["config"]
    weights: dict[str, list[np.ndarray]] = {}
    counters: dict[str, int] = {}
    with h5py.File(io.BytesIO(h5_bytes), "r") as h5:
        group = h5[f"layers/{h5_model}/layers"]
        for layer in xcfg["layers"]:
            base = re.sub(r"(?<!^)(?=[A-Z])", "_", layer["class_name"]).lower()
            base = _H5_CLASS_NAMES.get(layer["class_name"], base)
            count = counters.get(base, -1) + 1
            counters[base] = count
            h5_name = base if count == 0 else f"{base}_{count}"
            if layer["class_name"] not in _H5_CLASS_NAMES:
                continue
            if h5_name not in group:
                raise ModelError(f"{path}: weights of layer {layer['config']['name']} ({h5_name}) missing")
            vars_ = group[h5_name]["vars"]
            weights[layer["config"]["name"]] = [np.asarray(vars_[str(i)]) for i in range(len(vars_))]
    return xcfg, weights


def _torch_layout(kind: str, array: np.ndarray) -> torch.Tensor:
    """A Keras kernel in PyTorch's layout."""
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if kind == "conv":  # (kh, kw, in, out) -> (out, in, kh, kw)
        return tensor.permute(3, 2, 0, 1).contiguous()
    if kind == "depthwise":  # (kh, kw, in, multiplier) -> (in * multiplier, 1, kh, kw)
        kh, kw, cin, mult = tensor.shape
        return tensor.permute(2, 3, 0, 1).reshape(cin * mult, 1, kh, kw).contiguous()
    return tensor  # BatchNorm vectors


def _plan(xcfg: dict[str, Any], model: torch.nn.Module) -> list[tuple[str, str, torch.nn.Module]]:
    """(Keras layer name, kind, timm module) for every weighted Keras layer.

    Keras block b (2..13) is timm's ``block{b-1}``; the i-th separable conv (and its BN) of a
    Keras block is the i-th one in timm's ``rep``; a block's residual 1x1 conv and BN are the
    two inputs of the Add that follows its pool (``block{b}_pool``).
    """
    from timm.models.xception import SeparableConv2d

    layers = {layer["config"]["name"]: layer for layer in xcfg["layers"]}
    plan: list[tuple[str, str, torch.nn.Module]] = [
        ("block1_conv1", "conv", model.conv1),
        ("block1_conv1_bn", "bn", model.bn1),
        ("block1_conv2", "conv", model.conv2),
        ("block1_conv2_bn", "bn", model.bn2),
        ("block14_sepconv1", "sep", model.conv3),
        ("block14_sepconv1_bn", "bn", model.bn3),
        ("block14_sepconv2", "sep", model.conv4),
        ("block14_sepconv2_bn", "bn", model.bn4),
    ]
    for b in range(2, 14):
        block = getattr(model, f"block{b - 1}")
        seps = [m for m in block.rep if isinstance(m, SeparableConv2d)]
        bns = [m for m in block.rep if isinstance(m, torch.nn.BatchNorm2d)]
        for i, (sep, bn) in enumerate(zip(seps, bns, strict=True), start=1):
            plan.append((f"block{b}_sepconv{i}", "sep", sep))
            plan.append((f"block{b}_sepconv{i}_bn", "bn", bn))
        if block.skip is not None:
            adds = [
                name for name, layer in layers.items()
                if layer["class_name"] == "Add" and f"block{b}_pool" in _inbound(layer)
            ]
            if len(adds) != 1:
                raise ModelError(f"Keras Xception config: no residual Add after block{b}_pool")
            (skip_bn,) = [n for n in _inbound(layers[adds[0]]) if n != f"block{b}_pool"]
            (skip_conv,) = _inbound(layers[skip_bn])
            plan.append((skip_conv, "conv", block.skip))
            plan.append((skip_bn, "bn", block.skipbn))
    return plan


def _check_config(name: str, layer: dict[str, Any], module: torch.nn.Module, kind: str) -> None:
    """Refuse a Keras layer whose hyper-parameters timm's module would not reproduce."""
    cfg = layer["config"]
    if kind == "bn":
        if not (cfg.get("center", True) and cfg.get("scale", True)) or cfg.get("axis", -1) not in (-1, 3, [3], [-1]):
            raise ModelError(f"Keras layer {name}: BatchNormalization without centre/scale or on another axis")
        return
    conv = module.conv1 if kind == "sep" else module
    want_stride = tuple(cfg["strides"])
    if tuple(conv.stride) != want_stride or tuple(cfg.get("dilation_rate", (1, 1))) != (1, 1):
        raise ModelError(f"Keras layer {name}: stride {want_stride} does not match timm's {conv.stride}")
    if cfg.get("use_bias"):
        raise ModelError(f"Keras layer {name} has a bias; timm's legacy_xception has none")
    k = tuple(cfg["kernel_size"])
    # "same" equals PyTorch's symmetric padding k//2 at stride 1, and no padding for a 1x1
    # kernel at any stride; "valid" is no padding.
    expect = (0, 0) if cfg["padding"] == "valid" or k == (1, 1) else (k[0] // 2, k[1] // 2)
    if cfg["padding"] == "same" and k != (1, 1) and want_stride != (1, 1):
        raise ModelError(f"Keras layer {name}: strided 'same' convolution is not supported")
    if tuple(conv.padding) != expect:
        raise ModelError(f"Keras layer {name}: padding {cfg['padding']} does not match timm's {conv.padding}")
    if kind == "sep" and cfg.get("depth_multiplier", 1) != 1:
        raise ModelError(f"Keras layer {name}: depth_multiplier {cfg['depth_multiplier']} is not 1")


def build_xception(path: str | Path, report: dict[str, Any] | None = None) -> torch.nn.Module:
    """timm ``legacy_xception`` (pooled 2048-d, no classifier) holding the Keras file's weights.

    Every tensor's shape is checked, every weighted Keras layer must be used exactly once and
    every timm parameter and BatchNorm statistic must be filled. ``report``, when given, is
    filled with how the weights were matched (for ``stitch models --check``).
    """
    import timm
    from timm.layers.pool2d_same import MaxPool2dSame

    xcfg, weights = read_keras_file(path)
    model = timm.create_model("legacy_xception", pretrained=False, num_classes=0)
    layers = {layer["config"]["name"]: layer for layer in xcfg["layers"]}
    plan = _plan(xcfg, model)
    used = {name for name, _, _ in plan}
    if used != set(weights):
        raise ModelError(
            f"{path}: Keras Xception layers do not match timm's legacy_xception "
            f"(unused: {sorted(set(weights) - used)[:5]}, missing: {sorted(used - set(weights))[:5]})"
        )
    filled: set[int] = set()
    with torch.no_grad():
        for name, kind, module in plan:
            arrays = weights[name]
            _check_config(name, layers[name], module, kind)
            if kind == "conv":
                targets = [(module.weight, "conv")]
            elif kind == "sep":
                targets = [(module.conv1.weight, "depthwise"), (module.pointwise.weight, "conv")]
            else:  # Keras order: gamma, beta, moving_mean, moving_variance
                targets = [(t, "bn") for t in (module.weight, module.bias, module.running_mean, module.running_var)]
                module.eps = float(layers[name]["config"]["epsilon"])
            if len(arrays) != len(targets):
                raise ModelError(f"Keras layer {name}: {len(arrays)} arrays, timm expects {len(targets)}")
            for array, (target, layout) in zip(arrays, targets, strict=True):
                value = _torch_layout(layout, array)
                if value.shape != target.shape:
                    raise ModelError(
                        f"Keras layer {name}: shape {tuple(array.shape)} does not fit timm's {tuple(target.shape)}"
                    )
                target.copy_(value)
                filled.add(id(target))
    missing = [k for k, v in model.state_dict(keep_vars=True).items()
               if id(v) not in filled and not k.endswith("num_batches_tracked")]
    if missing:
        raise ModelError(f"{path}: no Keras weights for timm's {missing[:5]}")
    if report is not None:
        report.update({"how": "Keras layer name (block and position within it)", "matched": len(filled),
                       "model_tensors": len(filled), "file_tensors": sum(len(a) for a in weights.values()),
                       "head_loaded": False})
    for block in model.modules():
        rep = getattr(block, "rep", None)
        if rep is None:
            continue
        for i, layer in enumerate(rep):
            if isinstance(layer, torch.nn.MaxPool2d):
                rep[i] = MaxPool2dSame(layer.kernel_size, layer.stride)
    return model.eval()


def preprocess(image: Any, size: int = TRAINED_SIZE, interpolation: str = TRAINED_INTERPOLATION) -> torch.Tensor:
    """A PIL image as the package trained it: RGB, resized whole to size x size, x / 127.5 - 1."""
    from PIL import Image

    resample = getattr(Image.Resampling, interpolation.upper())
    image = image.convert("RGB")
    if image.size != (size, size):
        image = image.resize((size, size), resample)
    array = torch.from_numpy(np.asarray(image, dtype=np.float32).copy())
    return (array / 127.5 - 1.0).permute(2, 0, 1).contiguous()


OPTIONS = (
    Option("weights", Text("a file path"),
           "the Keras 3 .keras file (a zip of config.json and model.weights.h5), read with h5py",
           "always (the short name xception gives the packaged one)", space=False),
    Option("img_size", Integer(71),
           "the input resolution (square; the whole image is resized, never cropped)",
           "the packaged model was trained at 150; Keras's ImageNet Xception at 299"),
    Option("interpolation", Choice(INTERPOLATIONS, unknown_first=True),
           "the resize filter", "the packaged model was trained with Keras's default, nearest"),
)


class KerasXceptionEncoder(OnnxRuntimeMixin, Encoder):
    """``keras:xception?weights=FILE.keras[&img_size=150&interpolation=nearest]``."""

    modality = "image"
    options = OPTIONS

    def __init__(self, spec: ModelSpec, device: torch.device, dtype: torch.dtype) -> None:
        super().__init__(spec, device, dtype)
        if spec.name != "xception":
            raise ModelError(f"keras:{spec.name}: only keras:xception is supported")
        opts = spec.options
        if "weights" not in opts:
            raise ModelError("keras:xception needs ?weights=/path/to/file.keras (or use the short name xception)")
        self._weights = Path(opts["weights"])
        try:
            self._size = int(opts.get("img_size", TRAINED_SIZE))
        except ValueError as exc:
            raise ModelError(f"keras:xception: img_size must be an integer, got {opts['img_size']!r}") from exc
        # Below 71 px the 14 blocks shrink the map to nothing (Keras's own minimum is 71).
        if self._size < 71:
            raise ModelError(f"keras:xception: img_size {self._size} is below Xception's minimum of 71")
        self._interpolation = opts.get("interpolation", TRAINED_INTERPOLATION)
        if self._interpolation not in INTERPOLATIONS:
            raise ModelError(
                f"keras:xception: unknown interpolation {self._interpolation!r}: use one of {', '.join(INTERPOLATIONS)}"
            )
        self.weights_match = {}
        model = build_xception(self._weights, self.weights_match)
        self.model = model.to(device=device, dtype=dtype, memory_format=torch.channels_last)

    @property
    def dim(self) -> int:
        return int(self.model.num_features)

    def weight_files(self) -> list[Path]:
        return [self._weights]

    def preprocessing(self) -> dict[str, Any]:
        return {
            "mode": "RGB",
            "input_size": [3, self._size, self._size],
            "interpolation": self._interpolation,
            "crop_pct": 1.0,
            "scale": "x / 127.5 - 1",
        }

    def prepare(self, item: Any) -> torch.Tensor:
        return preprocess(item, self._size, self._interpolation)

    def onnx_input_size(self) -> tuple[int, int, int]:
        return (3, self._size, self._size)

    def onnx_identity(self) -> dict[str, Any]:
        return {"arch": "keras:xception", "weights_sha256": self.weights_sha256()}

    def encode(self, batch: torch.Tensor, *, tokens: bool = False) -> EncodeOutput:
        if self.runtime == "onnx":
            return self.onnx_encode(batch, tokens)
        x = batch.to(self.device, self.dtype, non_blocking=True, memory_format=torch.channels_last)
        feats = self.model.forward_features(x)
        pooled = self.model.forward_head(feats, pre_logits=True)
        if not tokens:
            return EncodeOutput(pooled.float())
        toks = feats.flatten(2).transpose(1, 2)
        mask = torch.ones(toks.shape[:2], dtype=torch.bool)
        return EncodeOutput(pooled.float(), toks.float(), mask)

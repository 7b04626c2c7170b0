"""torchvision classification models: ``torchvision:NAME?weights=FILE&transforms=ENUM``.

Pooled vectors are the input of the model's last ``Linear`` (its classifier), i.e. the
penultimate features the network was trained to separate classes with; ``--tokens`` gives the
last feature map before global pooling (CNNs) or the patch tokens of the encoder (ViT).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..errors import ModelError
from .base import EncodeOutput, Encoder, ModelSpec
from .hf_vision_backend import to_mode
from .specs import Option, Text
from .weights import read_state_dict

# What torchvision's own ImageNet weights were evaluated with (ResNet18_Weights.IMAGENET1K_V1
# and most V1 enums): used when no weights enum describes the file.
IMAGENET_DEFAULTS: dict[str, Any] = {
    "resize_size": [256], "crop_size": [224], "interpolation": "bilinear",
    "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
}


def _weights_enum(name: str, weights: Path | None, choice: str | None) -> tuple[Any, str]:
    """The weights enum member whose transforms apply, and why it was chosen."""
    import torchvision.models as tvm

    try:
        enum = tvm.get_model_weights(name)
    except (ValueError, KeyError):
        enum = None
    if choice:
        if enum is None or choice not in enum.__members__:
            known = ", ".join(enum.__members__) if enum is not None else "none"
            raise ModelError(f"torchvision:{name} has no weights enum entry {choice!r} (known: {known})")
        return enum[choice], f"transforms={choice}"
    if enum is None:
        return None, "ImageNet defaults"
    if weights is not None:
        # A file fetched from download.pytorch.org keeps its name (resnet50-11ad3fa6.pth):
        # that names exactly which enum entry, hence which resize, the weights were made for.
        for member in enum:
            if Path(member.url).name == weights.name:
                return member, f"file name matches {enum.__name__}.{member.name}"
    return enum.DEFAULT, f"{enum.__name__}.DEFAULT ({enum.DEFAULT.name})"


def _load(model: torch.nn.Module, path: Path, prefix: str, name: str,
          head: str = "") -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Load by key every tensor the (classifier-less) model has; extra keys are ignored.

    The classifier is removed first, so a network fine-tuned with another number of classes
    (a 2-class pneumonia ResNet) loads as well as the ImageNet original. Checkpoints saved
    from a wrapper carry a key prefix: DDP's ``module.`` is stripped by itself, any other
    (``model.``, ``backbone.``, ``encoder.``) is named with ``?prefix=``.
    """
    state = read_state_dict(path)
    if prefix:
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if not state:
            raise ModelError(f"no tensor in {path} has a key starting with {prefix!r}: check ?prefix=")
    stripped = not prefix and bool(state) and all(k.startswith("module.") for k in state)
    if stripped:
        state = {k[len("module."):]: v for k, v in state.items()}
    target = model.state_dict()
    missing = [k for k in target if k not in state]
    if missing:
        raise ModelError(
            f"weights in {path} do not fit {name}: {len(missing)} of its {len(target)} tensors are not "
            f"in the file (e.g. {missing[0]!r}; the file has e.g. {next(iter(state), 'nothing')!r}); "
            "check the architecture name, or add ?prefix= when the file's keys carry one"
        )
    wrong = [k for k in target if state[k].shape != target[k].shape]
    if wrong:
        raise ModelError(f"weights in {path} do not fit {name}: {wrong[0]!r} is {tuple(state[wrong[0]].shape)} "
                         f"in the file, {tuple(target[wrong[0]].shape)} in the model; check the architecture name")
    model.load_state_dict({k: state[k] for k in target})
    info = {"how": "name", "matched": len(target), "model_tensors": len(target),
            "file_tensors": len(state), "prefix": prefix or ("module." if stripped else "")}
    # The removed classifier (``head``), when the file holds it: for `stitch models --check`.
    classifier = {k: state[f"{head}.{k}"] for k in ("weight", "bias") if head and f"{head}.{k}" in state}
    return info, classifier


def _last_linear(model: torch.nn.Module) -> tuple[torch.nn.Module, str, torch.nn.Linear, str]:
    last = None
    for qual, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            last = qual, module
    if last is None:
        raise ModelError("this torchvision model has no Linear classifier to remove")
    qual, linear = last
    parent_name, _, child = qual.rpartition(".")
    return model.get_submodule(parent_name) if parent_name else model, child, linear, qual


OPTIONS = (
    Option("weights", Text("a file path"),
           "the local state dict (required: torchvision would download at run time); the "
           "classifier is removed first, so any number of classes loads",
           "always", space=False),
    Option("transforms", Text("a weights enum entry such as IMAGENET1K_V2"),
           "whose preprocessing (resize, crop, interpolation, mean/std) to use",
           "when the file name is not torchvision's own (resnet50-11ad3fa6.pth picks its entry "
           "itself); V1 and V2 entries resize differently (256 vs 232)"),
    Option("prefix", Text("a key prefix such as model."),
           "read only the tensors whose keys start with it, prefix removed",
           "checkpoints saved from a wrapper (Lightning's model., backbone.); DDP's module. is "
           "stripped without it"),
)


class TorchvisionEncoder(Encoder):
    modality = "image"
    options = OPTIONS

    def __init__(self, spec: ModelSpec, device: torch.device, dtype: torch.dtype) -> None:
        super().__init__(spec, device, dtype)
        import torchvision.models as tvm
        from torchvision import transforms as T

        opts = spec.options
        if spec.name not in tvm.list_models():
            raise ModelError(
                f"torchvision has no model named {spec.name!r}: see torchvision.models.list_models()"
            )
        if "weights" not in opts:
            # torchvision would download its ImageNet file at run time: say how to supply one.
            raise ModelError(
                f"model {spec.text!r}: torchvision needs a local state dict: add "
                f"?weights=/path/{spec.name}.pth (e.g. torch.save(model.state_dict(), PATH))"
            )
        self._weights = Path(opts["weights"])
        model = tvm.get_model(spec.name, weights=None)
        parent, child, linear, head = _last_linear(model)
        self._dim = int(linear.in_features)
        setattr(parent, child, torch.nn.Identity())
        self.weights_match, classifier = _load(model, self._weights, opts.get("prefix", ""),
                                               f"torchvision:{spec.name}", head)
        self.weights_match["head_loaded"] = False
        self._imagenet_head: torch.nn.Linear | None = None
        if classifier.get("weight") is not None and tuple(classifier["weight"].shape) == (1000, self._dim):
            self._imagenet_head = torch.nn.Linear(self._dim, 1000, bias="bias" in classifier)
            self._imagenet_head.load_state_dict(classifier)
            self.weights_match["head_loaded"] = True
        first_conv = next((m for m in model.modules() if isinstance(m, torch.nn.Conv2d)), None)
        self._mode = "L" if first_conv is not None and first_conv.in_channels == 1 else "RGB"
        # channels_last lets oneDNN pick its fast convolution kernels, as in the timm backend:
        # ResNet-18 ran 6.5 instead of 4.7 images/s on this project's shared 2-core CPU.
        self.model = model.eval().to(device=device, dtype=dtype, memory_format=torch.channels_last)
        self._token_hook = self._find_token_source()

        member, self._transform_source = _weights_enum(spec.name, self._weights, opts.get("transforms"))
        if member is not None:
            preset = member.transforms()
            self._cfg = {
                "resize_size": list(preset.resize_size), "crop_size": list(preset.crop_size),
                "interpolation": preset.interpolation.value, "mean": list(preset.mean),
                "std": list(preset.std),
            }
        else:
            self._cfg = dict(IMAGENET_DEFAULTS)
        # A plain Compose, not transforms.v2's (an nn.Module): the Ray engine strips modules
        # from the copy of the encoder it sends to its decode tasks.
        self._transform = T.Compose([
            T.Resize(self._cfg["resize_size"], interpolation=T.InterpolationMode(self._cfg["interpolation"])),
            T.CenterCrop(self._cfg["crop_size"]),
            T.ToTensor(),
            T.Normalize(self._cfg["mean"], self._cfg["std"]),
        ])

    def _find_token_source(self) -> tuple[torch.nn.Module, str] | None:
        """Where the last feature map is visible: the input of global average pooling, or a
        ViT encoder's output (class token first)."""
        from torchvision.models import VisionTransformer

        if isinstance(self.model, VisionTransformer):
            return self.model.encoder, "vit"
        for module in self.model.modules():
            if isinstance(module, torch.nn.AdaptiveAvgPool2d):
                return module, "pool"
        return None

    @property
    def dim(self) -> int:
        return self._dim

    def weight_files(self) -> list[Path]:
        return [self._weights]

    def preprocessing(self) -> dict[str, Any]:
        return {"mode": self._mode, "transforms_from": self._transform_source, **self._cfg,
                "pooled": "input of the last Linear (penultimate features)"}

    def prepare(self, item: Any) -> torch.Tensor:
        return self._transform(to_mode(item, self._mode))

    def imagenet_logits(self, batch: torch.Tensor) -> torch.Tensor | None:
        if self._imagenet_head is None:
            return None
        x = batch.to(self.device, self.dtype, memory_format=torch.channels_last)
        return self._imagenet_head.to(device=self.device, dtype=self.dtype)(self.model(x)).float()

    def encode(self, batch: torch.Tensor, *, tokens: bool = False) -> EncodeOutput:
        x = batch.to(self.device, self.dtype, non_blocking=True, memory_format=torch.channels_last)
        if not tokens:
            return EncodeOutput(self.model(x).float())
        if self._token_hook is None:
            raise ModelError(f"{self.spec.text}: --tokens needs a model with global average pooling or a ViT")
        module, kind = self._token_hook
        seen: list[torch.Tensor] = []

        def grab(mod: torch.nn.Module, args: tuple, output: torch.Tensor) -> None:
            seen.append(args[0] if kind == "pool" else output)

        handle = module.register_forward_hook(grab)
        try:
            pooled = self.model(x)
        finally:
            handle.remove()
        feats = seen[-1]
        if kind == "vit":
            toks = feats[:, 1:]  # drop the class token, keep the patches
        else:  # (B, C, H, W) -> (B, H*W, C)
            toks = feats.flatten(2).transpose(1, 2)
        mask = torch.ones(toks.shape[:2], dtype=torch.bool)
        return EncodeOutput(pooled.float(), toks.float(), mask)

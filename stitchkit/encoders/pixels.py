"""Images cross from the decode workers to the forward pass as 8-bit pixels, normalised there.

An evaluation transform that ends in ``ToTensor`` + ``Normalize`` (timm's and torchvision's)
is split in two: :meth:`EightBitPixels.prepare` runs the rest (resize, crop) in the decode
worker and gives the 8-bit (C, H, W) pixels; :meth:`EightBitPixels.normalise` turns a batch of
them into the float32 the model takes, where the forward runs (on its device). A batch crosses
in a quarter of the bytes, and the workers skip a float conversion per image (Lite0 on Kermany:
1.3-1.5 ms of a decode worker's CPU per image with float32 batches, 0.6-0.7 with 8-bit ones;
docs/speed.md). The values are bit for bit those of the whole transform: the same element-wise
operations in the same order (``/ 255``, ``- mean``, ``/ std`` in float32).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

_TO_TENSOR = ("ToTensor", "MaybeToTensor")


class EightBitPixels:
    """The 8-bit part of a transform (``pil``) and its normalisation (``mean``, ``std``)."""

    def __init__(self, pil: Any, mean: torch.Tensor, std: torch.Tensor, size: tuple[int, int] | None = None) -> None:
        self.pil, self.mean, self.std = pil, mean.view(1, -1, 1, 1), std.view(1, -1, 1, 1)
        self.size = size  # (H, W) the transform gives, where known: images of that size are not resampled
        self._buffer: torch.Tensor | None = None  # see normalise(reuse=True)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_buffer": None}

    @classmethod
    def split(cls, transform: Any, size: tuple[int, int] | None = None) -> EightBitPixels | None:
        """The split of a ``Compose`` ending in ToTensor + Normalize (giving ``size`` (H, W)
        images, where known); None for any other."""
        from torchvision import transforms as T

        steps = list(getattr(transform, "transforms", []))
        if len(steps) < 2 or type(steps[-2]).__name__ not in _TO_TENSOR or not isinstance(steps[-1], T.Normalize):
            return None
        norm = steps[-1]
        return cls(T.Compose(steps[:-2]), torch.as_tensor(norm.mean, dtype=torch.float32),
                   torch.as_tensor(norm.std, dtype=torch.float32), size)

    def prepare(self, image: Any) -> torch.Tensor:
        """(C, H, W) uint8 pixels of a PIL image in an 8-bit mode (L or RGB).

        An RGB image whose three channels are equal (a chest X-ray saved in colour, as every
        Kermany JPEG is) is resized and cropped as one grey channel, then repeated: the same
        values (PIL resamples each channel alike), a third of the work (Lite2's 224 → 260
        bicubic upscale: 1.69 ms of a decode worker's CPU per image in RGB, 1.24 so). An image
        already of the output size is not resampled, and is not looked at for this.
        """
        grey = _one_channel(image) if self.size is None or image.size != self.size[::-1] else None
        if grey is not None:
            pixels = np.array(self.pil(grey), dtype=np.uint8, copy=True)
            return torch.from_numpy(pixels)[None].expand(3, -1, -1)
        pixels = np.array(self.pil(image), dtype=np.uint8, copy=True)
        return torch.from_numpy(pixels.reshape(*pixels.shape[:2], -1)).permute(2, 0, 1)

    def normalise(self, batch: torch.Tensor, *, reuse: bool = False) -> torch.Tensor:
        """A (B, C, H, W) batch as the model takes it: uint8 pixels normalised (on the batch's
        device), anything else as it is.

        ``reuse``: into one buffer kept for the next call, so the result is valid until then (a
        forward pass that is done with its input): a fresh float32 batch pays its page faults
        on every call, four times the cost of the arithmetic (64 Lite0 images: 0.43 against
        0.09 ms of CPU per image).
        """
        if batch.dtype != torch.uint8:
            return batch
        out = self._buffer if reuse else None
        if out is None or out.shape != batch.shape or out.device != batch.device:
            out = torch.empty(batch.shape, dtype=torch.float32, device=batch.device)
            if reuse:
                self._buffer = out
        out.copy_(batch)
        return out.div_(255).sub_(self.mean.to(out.device)).div_(self.std.to(out.device))


def _one_channel(image: Any) -> Any:
    """The grey image of an RGB ``image`` whose three channels are equal, else None."""
    from PIL import Image

    if image.mode != "RGB":
        return None
    rgb = np.asarray(image)
    red = rgb[..., 0]
    if not (np.array_equal(red, rgb[..., 1]) and np.array_equal(red, rgb[..., 2])):
        return None
    return Image.fromarray(np.ascontiguousarray(red), "L")

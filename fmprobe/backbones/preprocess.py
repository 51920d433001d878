"""Build the image transform from a backbone's :class:`Preprocess` record (never from the dataset)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from fmprobe.backbones.base import Preprocess

INTERPOLATIONS = {
    "bicubic": InterpolationMode.BICUBIC,
    "bilinear": InterpolationMode.BILINEAR,
    "nearest": InterpolationMode.NEAREST,
}


class ImageTransform:
    """PIL RGB image -> normalised float tensor ``[3, size, size]``. Picklable, for DataLoader workers."""

    def __init__(self, config: Preprocess) -> None:
        if config.interpolation not in INTERPOLATIONS:
            raise ValueError(f"unknown interpolation {config.interpolation!r}")
        self.config = config
        self.mean = torch.tensor(config.mean).view(3, 1, 1)
        self.std = torch.tensor(config.std).view(3, 1, 1)

    def draft_request(self, width: int, height: int) -> tuple[int, int] | None:
        """The smallest size an image of ``width`` x ``height`` may be decoded at so that :meth:`resize` still only
        shrinks it (each side at least what the resize keeps); None where it would not shrink at all. JPEG decoders
        scale by 1/2, 1/4 or 1/8 in the DCT domain to the smallest such size at or above this (``Image.draft``),
        which is 3x less decode work for a 1024x768 photo resized to 224, at a difference within the resize's own
        rounding (see tests/test_decode_draft.py for the bound)."""
        c = self.config
        if c.resize_mode == "squash":
            fx, fy = c.size / width, c.size / height
        else:
            target = c.size if c.resize_mode == "longest_pad" else math.floor(c.size / c.crop_pct)
            fx = fy = target / (max(width, height) if c.resize_mode == "longest_pad" else min(width, height))
        if fx >= 0.5 and fy >= 0.5:
            return None  # less than a factor 2 to gain: DCT scaling cannot help
        return math.ceil(width * fx), math.ceil(height * fy)

    def resize(self, image: Image.Image) -> Image.Image:
        """The geometric part (resize + crop); its output is what a pixel cache may store."""
        c = self.config
        mode = INTERPOLATIONS[c.interpolation]
        if c.resize_mode == "squash":
            return TF.resize(image, [c.size, c.size], interpolation=mode, antialias=True)
        if c.resize_mode == "longest_pad":
            w, h = image.size
            scale = c.size / max(w, h)
            return TF.resize(image, [round(h * scale), round(w * scale)], interpolation=mode, antialias=True)
        short = math.floor(c.size / c.crop_pct)
        image = TF.resize(image, short, interpolation=mode, antialias=True)
        return TF.center_crop(image, [c.size, c.size])

    def to_uint8(self, image: Image.Image) -> tuple[torch.Tensor, tuple[int, int]]:
        """Resize/crop to ``[3, size, size]`` uint8 (zero-padded bottom/right for ``longest_pad``) and the
        valid height and width. What DataLoader workers send: a quarter of the bytes of float32."""
        tensor = TF.pil_to_tensor(self.resize(image))
        h, w = tensor.shape[1:]
        size = self.config.size
        if (h, w) != (size, size):
            tensor = F.pad(tensor, (0, size - w, 0, size - h))
        return tensor, (h, w)

    def normalise_batch(self, pixels: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """uint8 ``[B, 3, S, S]`` -> normalised float; padding (SAM's) is zero *after* normalisation."""
        mean, std = self.mean.to(pixels.device), self.std.to(pixels.device)
        out = pixels.float().sub_(mean * 255.0).mul_(1.0 / (std * 255.0))  # one pass in place: (x/255 - mean)/std
        if valid is not None and self.config.resize_mode == "longest_pad":
            size = out.shape[-1]
            rows = torch.arange(size, device=out.device)
            mask = (rows[None, :, None] < valid[:, 0, None, None]) & (rows[None, None, :] < valid[:, 1, None, None])
            out = out * mask[:, None].to(out.dtype)
        return out

    def __call__(self, image: Image.Image) -> torch.Tensor:
        pixels, (h, w) = self.to_uint8(image)
        return self.normalise_batch(pixels[None], torch.tensor([[h, w]]))[0]

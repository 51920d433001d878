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

    def normalise(self, image: Image.Image) -> torch.Tensor:
        tensor = TF.pil_to_tensor(image).float().div_(255.0)
        tensor = (tensor - self.mean) / self.std
        if self.config.resize_mode == "longest_pad":  # SAM pads bottom/right after normalisation
            size = self.config.size
            tensor = F.pad(tensor, (0, size - tensor.shape[2], 0, size - tensor.shape[1]))
        return tensor

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return self.normalise(self.resize(image))

"""What a backbone is to fmprobe: a frozen record of *data* (timm's pretrained-cfg idea) plus a builder.

Preprocessing, readouts, native resolution, where the weights are published and under which licence all live
in one :class:`BackboneSpec`, so the transform follows the weights (open_clip's rule) and nothing downstream
dispatches on substrings of names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

import torch
from torch import nn

ResizeMode = Literal["center_crop", "longest_pad", "squash"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class Preprocess:
    """How pixels become the tensor a network was trained on (follows the weights, never the dataset)."""

    size: int
    crop_pct: float = 1.0
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    resize_mode: ResizeMode = "center_crop"

    def at(self, size: int) -> Preprocess:
        return replace(self, size=size)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class WeightsInfo:
    """Where a checkpoint is published and what file ``--weights`` expects."""

    source: str  # "hf", "timm-hf", "torch-hub", "package", "open_clip", "url"
    hub_id: str = ""
    filename: str = ""
    url: str = ""
    license: str = ""

    def describe(self) -> str:
        where = self.url or (f"https://huggingface.co/{self.hub_id}" if self.hub_id else self.source)
        return f"{self.filename or 'checkpoint'} from {where}"


class FeatureModel(nn.Module):
    """A frozen network that maps a batch of images to one embedding per readout.

    Subclasses implement :meth:`forward_readouts`. Embedding widths are read from the model (one dummy forward)
    rather than declared, so a new variant can never disagree with its entry.
    """

    readouts: tuple[str, ...] = ()
    channels_last: bool = False

    def forward_readouts(self, images: torch.Tensor, readouts: tuple[str, ...]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def forward(self, images: torch.Tensor, readouts: tuple[str, ...]) -> dict[str, torch.Tensor]:
        return self.forward_readouts(images, readouts)

    @torch.inference_mode()
    def embed_dims(self, readouts: tuple[str, ...], size: int) -> dict[str, int]:
        device = next(self.parameters()).device
        out = self.forward_readouts(torch.zeros(1, 3, size, size, device=device), readouts)
        return {name: int(value.shape[-1]) for name, value in out.items()}


StateDict = dict[str, torch.Tensor]


@dataclass(frozen=True)
class BackboneSpec:
    """One registry entry. ``build(resolution)`` makes a randomly initialised :class:`FeatureModel`;
    ``filter_state_dict(sd, model)`` maps a checkpoint in the authors' layout onto it (then loaded strictly);
    ``locate_weights()`` finds the published file (hub cache or package) or raises a WeightsError."""

    name: str
    family: str
    implementation: str
    build: Callable[[int], FeatureModel]
    preprocess: Preprocess
    readouts: tuple[str, ...]
    default_readout: str
    weights: WeightsInfo
    locate_weights: Callable[[], Path] | None = None
    filter_state_dict: Callable[[StateDict, nn.Module], StateDict] | None = None
    description: str = ""
    paper: str = ""
    params_m: float | None = None
    extra: dict[str, object] = field(default_factory=dict)

    # Parametric readouts (e.g. r"block:\d+" for an intermediate block) beyond the listed ones.
    readout_patterns: tuple[str, ...] = ()

    @property
    def native_resolution(self) -> int:
        return self.preprocess.size

    def supports(self, readout: str) -> bool:
        import re

        return readout in self.readouts or any(re.fullmatch(p, readout) for p in self.readout_patterns)

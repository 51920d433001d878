"""A throwaway backbone family, written exactly as a family file in ``fmprobe/backbones/`` would be: a builder, a
:class:`~fmprobe.backbones.BackboneSpec` of data, and one ``register`` call (here inside :func:`registered`, so a
test can take it out again)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from fmprobe.backbones import BACKBONES, BackboneSpec, FeatureModel, Preprocess, WeightsInfo, register

NAME = "throwaway_tinynet"


class TinyNet(FeatureModel):
    """Two conv blocks; readout ``mean``: the global mean of the last map."""

    readouts = ("mean",)

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, stride=2, padding=1)
        self.blocks = nn.ModuleList(nn.Conv2d(width, width, 3, padding=1) for _ in range(2))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        x = self.stem(images)
        for block in self.blocks:
            x = torch.relu(block(x))
        return x

    def forward_readouts(self, images: torch.Tensor, readouts: tuple[str, ...]) -> dict[str, torch.Tensor]:
        return {"mean": self.features(images).mean(dim=(2, 3))}

    def tokens(self, images: torch.Tensor) -> torch.Tensor:
        return self.features(images).flatten(2).transpose(1, 2)

    def group_matcher(self, coarse: bool = False) -> dict[str, object]:
        return {"stem": r"^stem\.", "blocks": [(r"^blocks\.(\d+)\.", None)]}


SPEC = BackboneSpec(
    name=NAME,
    family="tinynet",
    implementation="fmprobe test TinyNet",
    build=lambda resolution: TinyNet(),
    preprocess=Preprocess(size=32, crop_pct=1.0),
    readouts=("mean",),
    default_readout="mean",
    weights=WeightsInfo(hf=(("someone/tinynet", "model.safetensors"),), license="mit"),
    description="a throwaway family for the registry tests",
)


@contextlib.contextmanager
def registered() -> Iterator[BackboneSpec]:
    """The family's one registry line, undone afterwards so no other test sees the entry."""
    register(SPEC)
    try:
        yield SPEC
    finally:
        BACKBONES.remove(NAME)

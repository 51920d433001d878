"""SAM 2's Hiera image encoder (Ravi et al., ICLR 2025) on timm's maintained ``sam2_hiera_*`` (HieraDet).

The authors' checkpoints (``sam2_hiera_{tiny,small,base_plus,large}.pt``: ``{'model': {'image_encoder.trunk.*':
..., 'image_encoder.neck.*': ..., 'sam_mask_decoder.*': ...}}``) are reduced to the trunk (``mlp.layers.0/1`` ->
``mlp.fc1/fc2``); the FPN neck, memory and mask-decoder parts are not the image backbone. timm's Hub copies load
as they are (its classifier head is not part of the trunk). Hiera interpolates its position embedding to the
feature map at run time, so any resolution divisible by 32 works. Preprocessing is SAM 2's: squash-resize to
1024 x 1024 (bilinear), ImageNet mean/std. Readout ``trunk_mean``: global mean of the last trunk stage (before
the neck; 768-d for Tiny).
"""

from __future__ import annotations

import re
from functools import partial

import timm
import torch
from torch import nn

from fmprobe.backbones.base import FeatureModel, Preprocess, StateDict, WeightsInfo, register
from fmprobe.backbones.timm_features import timm_family_entry
from fmprobe.backbones.weights import strip_prefix

RELEASE = "https://dl.fbaipublicfiles.com/segment_anything_2/072824"
VARIANTS = {  # name -> (timm architecture, released file, Hugging Face repo, paper name)
    "sam2_hiera_t": ("sam2_hiera_tiny", "sam2_hiera_tiny.pt", "facebook/sam2-hiera-tiny", "Hiera-T"),
    "sam2_hiera_s": ("sam2_hiera_small", "sam2_hiera_small.pt", "facebook/sam2-hiera-small", "Hiera-S"),
    "sam2_hiera_bplus": ("sam2_hiera_base_plus", "sam2_hiera_base_plus.pt", "facebook/sam2-hiera-base-plus", "Hiera-B+"),
    "sam2_hiera_l": ("sam2_hiera_large", "sam2_hiera_large.pt", "facebook/sam2-hiera-large", "Hiera-L"),
}
PREPROCESS = Preprocess(size=1024, crop_pct=1.0, interpolation="bilinear", resize_mode="squash")
READOUTS = ("trunk_mean",)


class HieraTrunkFeatures(FeatureModel):
    """timm's HieraDet trunk (held as ``trunk``, SAM 2's name); its NHWC map is the tokens, its stages the blocks."""

    readouts = READOUTS
    timm_attr = "trunk"

    def __init__(self, trunk: nn.Module) -> None:
        super().__init__()
        self.trunk = trunk

    def forward_readouts(self, images: torch.Tensor, readouts: tuple[str, ...]) -> dict[str, torch.Tensor]:
        return {"trunk_mean": self.trunk.forward_features(images).mean(dim=(1, 2))}  # B, H, W, C


def build_model(arch: str, resolution: int, **overrides: object) -> FeatureModel:
    trunk = timm.create_model(arch, pretrained=False, num_classes=0, **overrides)
    trunk.head = nn.Identity()  # timm's classifier norm is not part of SAM 2's trunk
    return HieraTrunkFeatures(trunk)


def filter_state_dict(state_dict: StateDict, model: nn.Module) -> StateDict:
    """SAM 2 release (``image_encoder.trunk.*``) or timm keys -> ``trunk.*``."""
    if any(k.startswith("image_encoder.trunk.") for k in state_dict):
        sd = strip_prefix(state_dict, "image_encoder.trunk.")
        sd = {re.sub(r"\.mlp\.layers\.(\d)\.", lambda m: f".mlp.fc{int(m.group(1)) + 1}.", k): v for k, v in sd.items()}
    else:
        sd = {k: v for k, v in state_dict.items() if not k.startswith("head.")}
    return {f"trunk.{k}": v for k, v in sd.items()}


for _name, (_arch, _filename, _repo, _paper_name) in VARIANTS.items():
    register(
        timm_family_entry(
            _name, "sam2", _arch,
            weights=WeightsInfo(urls=(f"{RELEASE}/{_filename}",), hf=((_repo, _filename),), license="apache-2.0"),
            preprocess=PREPROCESS, readouts=READOUTS, default_readout="trunk_mean",
            build=partial(build_model, _arch), filter_state_dict=filter_state_dict, implementation=f"timm {_arch} (trunk)",
            description=f"SAM 2 {_paper_name} image encoder trunk, trained on SA-1B and SA-V",
            paper="Ravi et al., SAM 2: Segment Anything in Images and Videos (ICLR 2025)",
        )  # fmt: skip
    )

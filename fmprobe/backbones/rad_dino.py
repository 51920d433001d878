"""RAD-DINO (Pérez-García et al., 2025): DINOv2 ViT-B/14 continued on chest X-rays, on timm's
``vit_base_patch14_dinov2``.

Published for transformers (``microsoft/rad-dino``, ``model.safetensors``); :func:`dinov2.filter_state_dict`
converts it, resampling the position embeddings by output size (``offset=0``) as transformers' Dinov2Model does.
Preprocessing as its ``preprocessor_config.json``: shortest edge 518, centre crop 518, bicubic (resample 3),
mean 0.5307, std 0.2583. Default readout: the final-norm class token.
"""

from __future__ import annotations

from functools import partial

from fmprobe.backbones.base import Preprocess, WeightsInfo, register
from fmprobe.backbones.dinov2 import filter_state_dict
from fmprobe.backbones.timm_features import timm_family_entry

PREPROCESS = Preprocess(size=518, crop_pct=1.0, interpolation="bicubic", mean=(0.5307,) * 3, std=(0.2583,) * 3)

register(
    timm_family_entry(
        "rad_dino", "rad_dino", "vit_base_patch14_dinov2",
        weights=WeightsInfo(hf=(("microsoft/rad-dino", "model.safetensors"),), license="msrla"),
        preprocess=PREPROCESS, filter_state_dict=partial(filter_state_dict, offset=0.0),
        description="RAD-DINO ViT-B/14: DINOv2 continued on chest X-rays (MIMIC-CXR, CheXpert, NIH, PadChest, BRAX)",
        paper="Pérez-García et al., Exploring scalable medical image encoders beyond text supervision (Nat. Mach. Intell. 2025)",
    )  # fmt: skip
)

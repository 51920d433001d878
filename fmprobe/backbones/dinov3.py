"""DINOv3 (Siméoni et al., 2025) ViTs on timm's maintained ``vit_*_patch16_dinov3`` (Eva with RoPE, 4 registers).

The authors' release (``dinov3_vit{s,b,l}16_pretrain_lvd1689m-*.pth``, gated behind the DINOv3 licence form) is
converted by timm's own ``checkpoint_filter_fn`` (``storage_tokens`` -> registers, split q/v biases); the default
location is timm's converted copy on the Hub. Rotary position embeddings need no resampling at other resolutions.
Preprocessing: DINOv3's evaluation transform (resize 256, centre crop 224, bicubic, ImageNet mean/std). Default
readout: the final-norm class token (upstream DINOv3 pools with it).
"""

from __future__ import annotations

from fmprobe.backbones.base import Preprocess, WeightsInfo, register
from fmprobe.backbones.timm_features import timm_family_entry

VARIANTS = {  # name -> (timm architecture, size word)
    "dinov3_vits16": ("vit_small_patch16_dinov3", "ViT-S/16"),
    "dinov3_vitb16": ("vit_base_patch16_dinov3", "ViT-B/16"),
    "dinov3_vitl16": ("vit_large_patch16_dinov3", "ViT-L/16"),
}
PREPROCESS = Preprocess(size=224, crop_pct=224 / 256, interpolation="bicubic")

for _name, (_arch, _paper_name) in VARIANTS.items():
    register(
        timm_family_entry(
            _name, "dinov3", _arch,
            weights=WeightsInfo(
                hf=((f"timm/{_arch}.lvd1689m", "model.safetensors"),), license="dinov3-license",
                note=f"the authors' gated release {_name}_pretrain_lvd1689m-*.pth is accepted too",
            ),
            preprocess=PREPROCESS,
            description=f"DINOv3 {_paper_name}, self-supervised on LVD-1689M (distilled from ViT-7B)",
            paper="Siméoni et al., DINOv3 (2025)",
        )  # fmt: skip
    )

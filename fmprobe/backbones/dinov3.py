"""DINOv3 (Siméoni et al., 2025) ViTs on timm's maintained ``vit_*_patch16_dinov3`` (Eva with RoPE, 4 registers).

The authors' release (``dinov3_vit{s,b,l}16_pretrain_lvd1689m-*.pth``, gated behind the DINOv3 licence form) is
converted by timm's own ``checkpoint_filter_fn`` (``storage_tokens`` -> registers, split q/v biases); the default
location is timm's converted copy on the Hub. Rotary position embeddings need no resampling at other resolutions.
Preprocessing: DINOv3's evaluation transform (resize 256, centre crop 224, bicubic, ImageNet mean/std). Default
readout: the final-norm class token (upstream DINOv3 pools with it).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from fmprobe.backbones.base import BackboneSpec, Preprocess, WeightsInfo
from fmprobe.backbones.vit import BLOCK_PATTERN, TOKEN_READOUTS, build_timm_tokens, timm_checkpoint_filter
from fmprobe.backbones.weights import locate_published

VARIANTS = {  # name -> (timm architecture, size word)
    "dinov3_vits16": ("vit_small_patch16_dinov3", "ViT-S/16"),
    "dinov3_vitb16": ("vit_base_patch16_dinov3", "ViT-B/16"),
    "dinov3_vitl16": ("vit_large_patch16_dinov3", "ViT-L/16"),
}
PREPROCESS = Preprocess(size=224, crop_pct=224 / 256, interpolation="bicubic")


def entry(name: str) -> BackboneSpec:
    arch, paper_name = VARIANTS[name]
    hub = f"timm/{arch}.lvd1689m"
    release = f"{name}_pretrain_lvd1689m-*.pth"

    def locate() -> Path:
        return locate_published(name, hf=((hub, "model.safetensors"),), note=f"the authors' gated release {release} is accepted too")

    return BackboneSpec(
        name=name,
        family="dinov3",
        implementation=f"timm {arch}",
        build=partial(build_timm_tokens, arch, TOKEN_READOUTS),
        preprocess=PREPROCESS,
        readouts=TOKEN_READOUTS,
        default_readout="cls",
        readout_patterns=(BLOCK_PATTERN,),
        weights=WeightsInfo("timm-hf", hub_id=hub, filename="model.safetensors", license="dinov3-license"),
        locate_weights=locate,
        filter_state_dict=timm_checkpoint_filter,
        description=f"DINOv3 {paper_name}, self-supervised on LVD-1689M (distilled from ViT-7B)",
        paper="Siméoni et al., DINOv3 (2025)",
    )


def entries() -> list[BackboneSpec]:
    return [entry(name) for name in VARIANTS]

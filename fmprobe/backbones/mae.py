"""MAE (He et al., CVPR 2022) encoders on timm's plain ``vit_{base,large}_patch16_224``.

MAE's code builds on timm's ViT, so its released encoders (``mae_pretrain_vit_base.pth``:
``{'model': {cls_token, pos_embed, patch_embed.proj, blocks.N.*, norm}}``) are in timm's layout; timm's
``checkpoint_filter_fn`` loads them (and the timm Hub copies ``timm/vit_*_patch16_224.mae``). Decoder and mask-token
entries of MAE's full/visualisation checkpoints are pre-training only and left out. Preprocessing is MAE's
linear-probe evaluation transform: resize 256, centre crop 224, bicubic, ImageNet mean/std. Default readout: the
final-norm class token (MAE's linear probing reads it).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from fmprobe.backbones.base import BackboneSpec, Preprocess, WeightsInfo
from fmprobe.backbones.vit import BLOCK_PATTERN, TOKEN_READOUTS, build_timm_tokens, timm_checkpoint_filter
from fmprobe.backbones.weights import locate_published

RELEASE = "https://dl.fbaipublicfiles.com/mae/pretrain"
VARIANTS = {  # name -> (timm architecture, released file, paper name)
    "mae_vitb16": ("vit_base_patch16_224", "mae_pretrain_vit_base.pth", "ViT-B/16"),
    "mae_vitl16": ("vit_large_patch16_224", "mae_pretrain_vit_large.pth", "ViT-L/16"),
}
PREPROCESS = Preprocess(size=224, crop_pct=224 / 256, interpolation="bicubic")


def entry(name: str) -> BackboneSpec:
    arch, filename, paper_name = VARIANTS[name]
    url = f"{RELEASE}/{filename}"
    hub = f"timm/{arch}.mae"

    def locate() -> Path:
        return locate_published(name, urls=(url,), hf=((hub, "model.safetensors"),))

    return BackboneSpec(
        name=name,
        family="mae",
        implementation=f"timm {arch}",
        build=partial(build_timm_tokens, arch, TOKEN_READOUTS),
        preprocess=PREPROCESS,
        readouts=TOKEN_READOUTS,
        default_readout="cls",
        readout_patterns=(BLOCK_PATTERN,),
        weights=WeightsInfo("url", hub_id=hub, filename=filename, url=url, license="cc-by-nc-4.0"),
        locate_weights=locate,
        filter_state_dict=partial(timm_checkpoint_filter, drop=("decoder", "mask_token")),
        description=f"MAE {paper_name} encoder, masked-autoencoder pre-training on ImageNet-1k",
        paper="He et al., Masked Autoencoders Are Scalable Vision Learners (CVPR 2022)",
    )


def entries() -> list[BackboneSpec]:
    return [entry(name) for name in VARIANTS]

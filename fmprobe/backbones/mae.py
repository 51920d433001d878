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

from fmprobe.backbones.base import Preprocess, WeightsInfo, register
from fmprobe.backbones.timm_features import timm_checkpoint_filter, timm_family_entry

RELEASE = "https://dl.fbaipublicfiles.com/mae/pretrain"
VARIANTS = {  # name -> (timm architecture, released file, paper name)
    "mae_vitb16": ("vit_base_patch16_224", "mae_pretrain_vit_base.pth", "ViT-B/16"),
    "mae_vitl16": ("vit_large_patch16_224", "mae_pretrain_vit_large.pth", "ViT-L/16"),
}
PREPROCESS = Preprocess(size=224, crop_pct=224 / 256, interpolation="bicubic")
filter_state_dict = partial(timm_checkpoint_filter, drop=("decoder", "mask_token"))

for _name, (_arch, _filename, _paper_name) in VARIANTS.items():
    register(
        timm_family_entry(
            _name, "mae", _arch,
            weights=WeightsInfo(urls=(f"{RELEASE}/{_filename}",), hf=((f"timm/{_arch}.mae", "model.safetensors"),), license="cc-by-nc-4.0"),
            preprocess=PREPROCESS, filter_state_dict=filter_state_dict,
            description=f"MAE {_paper_name} encoder, masked-autoencoder pre-training on ImageNet-1k",
            paper="He et al., Masked Autoencoders Are Scalable Vision Learners (CVPR 2022)",
        )  # fmt: skip
    )

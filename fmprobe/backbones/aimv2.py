"""AIMv2 (Fini et al., CVPR 2025) encoders on timm's ``aimv2_*_patch14_224`` (no class token, RMSNorm, SwiGLU).

The authors' Hugging Face release (``apple/aimv2-large-patch14-224``: ``preprocessor.patchifier.*``,
``trunk.blocks.N.*``) is converted by timm's own ``checkpoint_filter_fn``; timm's copy is accepted as is.
Preprocessing as published (CLIP image processor: resize short side 224, centre crop 224, bicubic, CLIP
mean/std). Default readout: the mean of the final-norm patch tokens (there is no class token).
"""

from __future__ import annotations

from fmprobe.backbones.base import CLIP_MEAN, CLIP_STD, Preprocess, WeightsInfo, register
from fmprobe.backbones.timm_features import timm_family_entry

READOUTS = ("mean_patch",)
VARIANTS = {  # name -> (timm architecture, authors' Hugging Face repo, paper name)
    "aimv2_vitl14": ("aimv2_large_patch14_224", "apple/aimv2-large-patch14-224", "ViT-L/14"),
    "aimv2_vith14": ("aimv2_huge_patch14_224", "apple/aimv2-huge-patch14-224", "ViT-H/14"),
}
PREPROCESS = Preprocess(size=224, crop_pct=1.0, interpolation="bicubic", mean=CLIP_MEAN, std=CLIP_STD)

for _name, (_arch, _repo, _paper_name) in VARIANTS.items():
    register(
        timm_family_entry(
            _name, "aimv2", _arch,
            weights=WeightsInfo(hf=((_repo, "model.safetensors"), (f"timm/{_arch}.apple_pt", "model.safetensors")), license="apple-ascl"),
            preprocess=PREPROCESS, readouts=READOUTS, default_readout="mean_patch",
            description=f"AIMv2 {_paper_name}, autoregressive image+text pre-training (224 px)",
            paper="Fini et al., Multimodal Autoregressive Pre-training of Large Vision Encoders (CVPR 2025)",
        )  # fmt: skip
    )

"""BLIP's image encoder (Li et al., ICML 2022) on timm's plain ``vit_{base,large}_patch16_224``.

BLIP's ``models/vit.py`` is a timm-style ViT (``patch_embed.proj``, ``cls_token``, ``pos_embed``,
``blocks.N.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}``, ``norm``, LayerNorm eps 1e-6), so its
released checkpoints (``model_base.pth``: ``{'model': {'visual_encoder.*': ..., 'visual_encoder_m.*': ...,
'text_encoder.*': ...}}``) load into timm after taking the ``visual_encoder.`` entries (the momentum encoder
``visual_encoder_m`` and the text side are not part of the image encoder). Hugging Face BLIP checkpoints
(``vision_model.embeddings.class_embedding``, ``encoder.layers.N.self_attn.qkv``, ``post_layernorm``, ...) are
converted too. At other resolutions the position embeddings are resampled as BLIP's ``interpolate_pos_embed``
does (bicubic by output size, no antialias). Preprocessing is BLIP's test transform: squash-resize to 224,
bicubic, CLIP mean/std. Default readout: the final-norm class token.
"""

from __future__ import annotations

from timm.layers import resample_abs_pos_embed
from torch import nn

from fmprobe.backbones.base import CLIP_MEAN, CLIP_STD, Preprocess, StateDict, WeightsInfo, register
from fmprobe.backbones.timm_features import build_timm_tokens, timm_family_entry
from fmprobe.backbones.weights import rename_key, strip_prefix

RELEASE = "https://storage.googleapis.com/sfr-vision-language-research/BLIP/models"
VARIANTS = {  # name -> (timm architecture, released file, description)
    "blip_vitb16": ("vit_base_patch16_224", "model_base.pth", "BLIP ViT-B/16 image encoder, pre-trained on 14M image-text pairs"),
    "blip_vitl16": ("vit_large_patch16_224", "model_large.pth", "BLIP ViT-L/16 image encoder, pre-trained on 129M image-text pairs"),
}
PREPROCESS = Preprocess(size=224, crop_pct=1.0, interpolation="bicubic", mean=CLIP_MEAN, std=CLIP_STD, resize_mode="squash")
HF_RENAMES = (
    (r"^embeddings\.class_embedding$", "cls_token"),
    (r"^embeddings\.position_embedding$", "pos_embed"),
    (r"^embeddings\.patch_embedding\.", "patch_embed.proj."),
    (r"^encoder\.layers\.(\d+)\.self_attn\.qkv\.", r"blocks.\1.attn.qkv."),
    (r"^encoder\.layers\.(\d+)\.self_attn\.projection\.", r"blocks.\1.attn.proj."),
    (r"^encoder\.layers\.(\d+)\.layer_norm(\d)\.", r"blocks.\1.norm\2."),
    (r"^encoder\.layers\.(\d+)\.mlp\.", r"blocks.\1.mlp."),
    (r"^post_layernorm\.", "norm."),
)


build_model = build_timm_tokens  # BLIP's encoder is a plain timm ViT


def hf_to_release(state_dict: StateDict) -> StateDict:
    """Hugging Face ``BlipVisionModel`` keys -> BLIP's ``visual_encoder`` keys (without the prefix)."""
    out: StateDict = {}
    for key, value in state_dict.items():
        out[rename_key(key, HF_RENAMES, "a Hugging Face BLIP checkpoint", "vision_model.")] = value
    return out


def filter_state_dict(state_dict: StateDict, model: nn.Module) -> StateDict:
    """BLIP release (``visual_encoder.*``), Hugging Face BLIP (``vision_model.*``) or bare encoder keys -> ``model.*``."""
    if any(k.startswith("visual_encoder.") for k in state_dict):
        sd = strip_prefix(state_dict, "visual_encoder.")
    elif any(k.startswith("vision_model.") for k in state_dict):
        sd = hf_to_release(strip_prefix(state_dict, "vision_model."))
    else:
        sd = dict(state_dict)
    inner = getattr(model, "model", model)
    if "pos_embed" in sd and sd["pos_embed"].shape != inner.pos_embed.shape:
        sd["pos_embed"] = resample_abs_pos_embed(
            sd["pos_embed"], new_size=list(inner.patch_embed.grid_size), num_prefix_tokens=1, interpolation="bicubic", antialias=False
        )
    return {f"model.{k}": v for k, v in sd.items()}


for _name, (_arch, _filename, _text) in VARIANTS.items():
    register(
        timm_family_entry(
            _name, "blip", _arch,
            weights=WeightsInfo(
                urls=(f"{RELEASE}/{_filename}",), license="bsd-3-clause",
                note="Hugging Face BLIP checkpoints (vision_model.*) are accepted too",
            ),
            preprocess=PREPROCESS, filter_state_dict=filter_state_dict, readout_patterns=(),
            description=_text, paper="Li et al., BLIP: Bootstrapping Language-Image Pre-training (ICML 2022)",
        )  # fmt: skip
    )

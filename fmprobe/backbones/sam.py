"""Segment Anything's image encoder (Kirillov et al., ICCV 2023) on timm's maintained ``samvit_*_patch16``.

Published weights, accepted by :func:`filter_state_dict`: the segment-anything release ``sam_vit_{b,l,h}_*.pth``
(``image_encoder.*`` beside ``prompt_encoder.*``/``mask_decoder.*``, MLP as ``mlp.lin1/lin2``, neck as
``neck.0-3``) and Hugging Face ``facebook/sam-vit-*`` (``vision_encoder.*``). Preprocessing is SAM's own:
longest side resized to 1024 (bilinear, as ``ResizeLongestSide`` does through torchvision), normalised with
``pixel_mean/std`` on 0-255 (= ImageNet mean/std on 0-1), then zero-padded bottom/right to a square.

Reduced resolutions (e.g. 224, 512) rebuild the encoder for that grid and resample, once, at load time: the
absolute position embedding (64x64 at 1024) bicubically with antialias, as timm's samvit does when fed a smaller
image, and the relative position tables of the global-attention blocks (2*64-1 rows) linearly to 2*grid-1 rows,
exactly as segment-anything's ``get_rel_pos`` does at run time. At 1024 both are the identity.

Readouts: ``encoder_mean`` (default): global mean of the last encoder block's tokens, before the neck (768-d for
ViT-B); ``neck_mean``: global mean of the 256-d map after the neck (the embedding SAM's mask decoder reads).
"""

from __future__ import annotations

from functools import partial

import timm
import torch
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed_nhwc
from torch import nn

from fmprobe.backbones.base import FeatureModel, Preprocess, StateDict, WeightsInfo, register
from fmprobe.backbones.timm_features import timm_family_entry
from fmprobe.backbones.weights import rename_key, strip_prefix
from fmprobe.errors import FmprobeError

RELEASE = "https://dl.fbaipublicfiles.com/segment_anything"
VARIANTS = {  # name -> (timm architecture, released file, Hugging Face repo, paper name)
    "sam_vitb": ("samvit_base_patch16", "sam_vit_b_01ec64.pth", "facebook/sam-vit-base", "ViT-B"),
    "sam_vitl": ("samvit_large_patch16", "sam_vit_l_0b3195.pth", "facebook/sam-vit-large", "ViT-L"),
    "sam_vith": ("samvit_huge_patch16", "sam_vit_h_4b8939.pth", "facebook/sam-vit-huge", "ViT-H"),
}
_UPSTREAM = {"sam_vitb": ("vit_b", "sam_vit_b"), "sam_vitl": ("vit_l", "sam_vit_l"), "sam_vith": ("vit_h", "sam_vit_h")}  # segment-anything's
PREPROCESS = Preprocess(size=1024, crop_pct=1.0, interpolation="bilinear", resize_mode="longest_pad")
READOUTS = ("encoder_mean", "neck_mean")
HF_RENAMES = (
    (r"^patch_embed\.projection\.", "patch_embed.proj."),
    (r"^layers\.(\d+)\.layer_norm(\d)\.", r"blocks.\1.norm\2."),
    (r"^layers\.(\d+)\.mlp\.lin(\d)\.", r"blocks.\1.mlp.fc\2."),
    (r"^layers\.(\d+)\.attn\.", r"blocks.\1.attn."),
    (r"^neck\.conv1\.", "neck.0."),
    (r"^neck\.layer_norm1\.", "neck.1."),
    (r"^neck\.conv2\.", "neck.2."),
    (r"^neck\.layer_norm2\.", "neck.3."),
    (r"^pos_embed$", "pos_embed"),
)


class SamEncoderFeatures(FeatureModel):
    """Runs timm's VisionTransformerSAM and reads the token map before and after the neck."""

    readouts = READOUTS

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """The last encoder block's token map ``[B, H, W, C]`` (NHWC, before the neck)."""
        m = self.model
        x = m.patch_embed(images)  # B, H, W, C
        if m.pos_embed is not None:
            x = x + resample_abs_pos_embed_nhwc(m.pos_embed, list(x.shape[1:3]))  # identity at the built grid
        x = m.norm_pre(m.patch_drop(m.pos_drop(x)))
        return m.blocks(x)

    def forward_readouts(self, images: torch.Tensor, readouts: tuple[str, ...]) -> dict[str, torch.Tensor]:
        x = self.encode(images)
        out = {"encoder_mean": x.mean(dim=(1, 2))}
        if "neck_mean" in readouts:
            out["neck_mean"] = self.model.neck(x.permute(0, 3, 1, 2)).mean(dim=(2, 3))
        return {name: out[name] for name in readouts}

    def tokens(self, images: torch.Tensor) -> torch.Tensor:
        """The encoder tokens the default readout averages (timm's ``forward_features`` would return the neck's map)."""
        return self.encode(images).flatten(1, 2)


def build_model(arch: str, resolution: int, **overrides: object) -> FeatureModel:
    if resolution % 16:
        raise FmprobeError(f"SAM needs a resolution divisible by its 16-pixel patches (e.g. 224, 512, 1024); got {resolution}.")
    return SamEncoderFeatures(timm.create_model(arch, pretrained=False, num_classes=0, img_size=resolution, **overrides))


def resize_rel_pos(rel_pos: torch.Tensor, length: int) -> torch.Tensor:
    """segment-anything's ``get_rel_pos`` resampling: linear over the table rows, align_corners=False."""
    if rel_pos.shape[0] == length:
        return rel_pos
    table = rel_pos.float().T.unsqueeze(0)  # 1, C, L
    return F.interpolate(table, size=length, mode="linear").squeeze(0).T.to(rel_pos.dtype)


def resize_abs_pos(pos: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """The 1 x H x W x C absolute embedding at another grid: bicubic with antialias (timm's samvit behaviour)."""
    return resample_abs_pos_embed_nhwc(pos, list(grid))


def hf_to_release(state_dict: StateDict) -> StateDict:
    out: StateDict = {}
    for key, value in state_dict.items():
        out[rename_key(key, HF_RENAMES, "a Hugging Face SAM checkpoint", "vision_encoder.")] = value
    return out


def filter_state_dict(state_dict: StateDict, model: nn.Module) -> StateDict:
    """segment-anything (``image_encoder.*``), Hugging Face (``vision_encoder.*``) or timm keys -> ``model.*``,
    position embeddings resampled to the model's grid (see the module doc)."""
    if any(k.startswith("image_encoder.") for k in state_dict):
        sd = {k.replace("mlp.lin1", "mlp.fc1").replace("mlp.lin2", "mlp.fc2"): v for k, v in strip_prefix(state_dict, "image_encoder.").items()}
    elif any(k.startswith("vision_encoder.") for k in state_dict):
        sd = hf_to_release(strip_prefix(state_dict, "vision_encoder."))
    else:
        sd = dict(state_dict)
    inner = getattr(model, "model", model)
    own = inner.state_dict()
    if "pos_embed" in sd and "pos_embed" in own and sd["pos_embed"].shape != own["pos_embed"].shape:
        sd["pos_embed"] = resize_abs_pos(sd["pos_embed"], tuple(own["pos_embed"].shape[1:3]))
    for key in list(sd):
        if key.endswith(("rel_pos_h", "rel_pos_w")) and key in own and sd[key].shape[0] != own[key].shape[0]:
            sd[key] = resize_rel_pos(sd[key], own[key].shape[0])
    return {f"model.{k}": v for k, v in sd.items()}


for _name, (_arch, _filename, _repo, _paper_name) in VARIANTS.items():
    register(
        timm_family_entry(
            _name, "sam", _arch,
            weights=WeightsInfo(urls=(f"{RELEASE}/{_filename}",), hf=((_repo, "model.safetensors"),), license="apache-2.0"),
            preprocess=PREPROCESS, readouts=READOUTS, default_readout="encoder_mean",
            build=partial(build_model, _arch), filter_state_dict=filter_state_dict,
            description=f"Segment Anything {_paper_name} image encoder, trained on SA-1B",
            paper="Kirillov et al., Segment Anything (ICCV 2023)",
        ).with_aliases(_UPSTREAM[_name])  # fmt: skip
    )

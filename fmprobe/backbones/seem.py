"""SEEM's FocalNet image backbone (Zou et al., NeurIPS 2023), written here to SEEM's published parameter layout.

SEEM (github.com/UX-Decoder/Segment-Everything-Everywhere-All-At-Once) ships two FocalNet flavours that timm's
``focalnet_*`` cannot load: Focal-T (``configs/seem/focalt_unicl_lang_v{0,1}.yaml``, backbone ``focal_dw``) adds a
3x3 depthwise convolution before modulation and before the MLP (``dw1``/``dw2``), normalises *after* each
residual sum and uses a 7x7/pad-3 stem; Focal-L (``focall_unicl_lang_v{0,1}.yaml``, backbone ``focal``)
normalises the branch outputs (timm's ``use_post_norm``) with a 7x7/pad-2 stem. Both: overlapping conv
embeddings, focal window 3, layer scale 1e-4, modulator scaled by 1/(levels+1), and one LayerNorm per stage output
(``norm0``..``norm3`` -> ``res2``..``res5`` at strides 4, 8, 16, 32). Parameter names and shapes are SEEM's, so
the ``backbone.*`` entries of a released checkpoint (``seem_focalt_v0.pt``; the v1 files share the layout) load
strictly with no renaming; the rest of SEEM (pixel decoder, language encoder, heads) is not an image encoder
and is left out. The plain flavour is checked against timm's FocalNet in the tests.

Preprocessing: SEEM's ``PIXEL_MEAN/STD`` on 0-255 (= ImageNet mean/std), short side 512, bicubic (SEEM's
demo transform). Readouts: global mean of a stage's normalised output: ``res5`` (default, 768-d for Focal-T),
``res4``, ``res3``, ``res2``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from fmprobe.backbones.base import (
    TAIL_ORDINAL,
    BackboneSpec,
    FeatureModel,
    GroupMatcher,
    Preprocess,
    StateDict,
    WeightsInfo,
    register,
)
from fmprobe.errors import WeightsError

READOUTS = ("res5", "res4", "res3", "res2")
STRIDES = {"res2": 4, "res3": 8, "res4": 16, "res5": 32}
PREPROCESS = Preprocess(size=512, crop_pct=1.0, interpolation="bicubic")
HF_REPO = "xdecoder/SEEM"


@dataclass(frozen=True)
class FocalConfig:
    """The ``MODEL.BACKBONE.FOCAL`` block of a SEEM config (only the fields that shape the network)."""

    embed_dim: int = 96
    depths: tuple[int, ...] = (2, 2, 6, 2)
    focal_levels: tuple[int, ...] = (3, 3, 3, 3)
    focal_windows: tuple[int, ...] = (3, 3, 3, 3)
    depthwise: bool = True  # backbone NAME focal_dw (True) or focal (False)
    mlp_ratio: float = 4.0
    use_postln: bool = True
    scaling_modulator: bool = True
    layerscale_value: float = 1e-4


FOCAL_T = FocalConfig()  # configs/seem/focalt_unicl_lang_v0.yaml and _v1.yaml
FOCAL_L = FocalConfig(embed_dim=192, depths=(2, 2, 18, 2), focal_levels=(4, 4, 4, 4), depthwise=False)  # focall_*


def _pad_to(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pad an NCHW map bottom/right to a multiple of the patch size (SEEM's PatchEmbed does the same)."""
    h, w = x.shape[-2:]
    return F.pad(x, (0, (-w) % multiple, 0, (-h) % multiple))


class ConvEmbed(nn.Module):
    """Overlapping conv patch embedding + LayerNorm (SEEM's ``PatchEmbed`` with ``use_conv_embed``)."""

    def __init__(self, in_chans: int, dim: int, stem: bool, stem_padding: int) -> None:
        super().__init__()
        kernel, stride, padding = (7, 4, stem_padding) if stem else (3, 2, 1)
        self.stride = stride
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=kernel, stride=stride, padding=padding)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # NCHW -> NHWC
        x = self.proj(_pad_to(x, self.stride))
        return self.norm(x.permute(0, 2, 3, 1))


class FocalModulation(nn.Module):
    def __init__(self, dim: int, level: int, window: int, scaling: bool) -> None:
        super().__init__()
        self.level, self.scaling = level, scaling
        self.f = nn.Linear(dim, 2 * dim + level + 1)
        self.h = nn.Conv2d(dim, dim, kernel_size=1)
        self.proj = nn.Linear(dim, dim)
        self.act = nn.GELU()
        self.focal_layers = nn.ModuleList(
            nn.Sequential(nn.Conv2d(dim, dim, k, padding=k // 2, groups=dim, bias=False), nn.GELU())
            for k in (window + 2 * i for i in range(level))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # NHWC
        dim = x.shape[-1]
        q, ctx, gates = self.f(x).permute(0, 3, 1, 2).split((dim, dim, self.level + 1), dim=1)
        context = 0
        for i, layer in enumerate(self.focal_layers):
            ctx = layer(ctx)
            context = context + ctx * gates[:, i : i + 1]
        context = context + self.act(ctx.mean(dim=(2, 3), keepdim=True)) * gates[:, self.level :]
        if self.scaling:
            context = context / (self.level + 1)
        return self.proj((q * self.h(context)).permute(0, 2, 3, 1))


class FocalBlock(nn.Module):
    def __init__(self, dim: int, level: int, window: int, cfg: FocalConfig) -> None:
        super().__init__()
        self.depthwise, self.postln = cfg.depthwise, cfg.use_postln
        if self.depthwise:
            self.dw1 = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm1 = nn.LayerNorm(dim)
        self.modulation = FocalModulation(dim, level, window, cfg.scaling_modulator)
        if self.depthwise:
            self.dw2 = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * cfg.mlp_ratio)
        self.mlp = nn.Sequential()
        self.mlp.add_module("fc1", nn.Linear(dim, hidden))
        self.mlp.add_module("act", nn.GELU())
        self.mlp.add_module("fc2", nn.Linear(hidden, dim))
        self.gamma_1 = nn.Parameter(torch.full((dim,), cfg.layerscale_value))
        self.gamma_2 = nn.Parameter(torch.full((dim,), cfg.layerscale_value))

    @staticmethod
    def _dw(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
        return x + conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # NHWC
        if self.depthwise:  # focal_dw: norms follow the residual sums
            x = self._dw(self.dw1, x)
            x = x + self.gamma_1 * self.modulation(x if self.postln else self.norm1(x))
            x = self.norm1(x) if self.postln else x
            x = self._dw(self.dw2, x)
            if self.postln:
                return self.norm2(x + self.gamma_2 * self.mlp(x))
            return x + self.gamma_2 * self.mlp(self.norm2(x))
        if self.postln:  # focal: norms close each branch
            x = x + self.gamma_1 * self.norm1(self.modulation(x))
            return x + self.gamma_2 * self.norm2(self.mlp(x))
        x = x + self.gamma_1 * self.modulation(self.norm1(x))
        return x + self.gamma_2 * self.mlp(self.norm2(x))


class FocalStage(nn.Module):
    """SEEM's ``BasicLayer``: blocks, then the downsampling embedding of the next stage (none after the last)."""

    def __init__(self, dim: int, depth: int, level: int, window: int, cfg: FocalConfig, downsample: bool) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(FocalBlock(dim, level, window, cfg) for _ in range(depth))
        self.downsample = ConvEmbed(dim, 2 * dim, stem=False, stem_padding=0) if downsample else None


class FocalNet(nn.Module):
    """SEEM's FocalNet backbone; ``forward`` returns the normalised stage maps ``{'res2'..'res5': NHWC}``."""

    def __init__(self, cfg: FocalConfig) -> None:
        super().__init__()
        self.cfg = cfg
        dims = [cfg.embed_dim * 2**i for i in range(len(cfg.depths))]
        self.num_features = dims
        self.patch_embed = ConvEmbed(3, dims[0], stem=True, stem_padding=3 if cfg.depthwise else 2)
        self.layers = nn.ModuleList(
            FocalStage(dims[i], cfg.depths[i], cfg.focal_levels[i], cfg.focal_windows[i], cfg, i < len(dims) - 1)
            for i in range(len(dims))
        )
        for i, dim in enumerate(dims):
            self.add_module(f"norm{i}", nn.LayerNorm(dim))

    def forward(self, x: torch.Tensor, last: int = 3) -> dict[str, torch.Tensor]:
        x = self.patch_embed(x)
        outs = {}
        for i, stage in enumerate(self.layers[: last + 1]):
            for block in stage.blocks:
                x = block(x)
            outs[f"res{i + 2}"] = getattr(self, f"norm{i}")(x)
            if stage.downsample is not None and i < last:
                x = stage.downsample(x.permute(0, 3, 1, 2))
        return outs


class SeemFeatures(FeatureModel):
    readouts = READOUTS
    channels_last = False

    def __init__(self, cfg: FocalConfig) -> None:
        super().__init__()
        self.backbone = FocalNet(cfg)  # named as in SEEM, so checkpoint keys match verbatim

    def forward_readouts(self, images: torch.Tensor, readouts: tuple[str, ...]) -> dict[str, torch.Tensor]:
        last = max(int(r[3:]) for r in readouts) - 2  # stop after the deepest stage asked for
        maps = self.backbone(images, last=last)
        return {name: maps[name].mean(dim=(1, 2)) for name in readouts}

    def tokens(self, images: torch.Tensor) -> torch.Tensor:
        """The last stage's normalised map (what ``res5`` averages), ``[B, H*W, C]``."""
        last = len(self.backbone.layers) - 1
        return self.backbone(images, last=last)[f"res{last + 2}"].flatten(1, 2)

    def group_matcher(self, coarse: bool = False) -> GroupMatcher:
        """Stem: the first conv embedding; blocks: the Focal stages (``coarse``) or their blocks, each stage's
        output norm and downsampling embedding after its blocks; tail: the last stage's norm."""
        last = len(self.backbone.layers) - 1
        after_blocks = (TAIL_ORDINAL,)
        stage = [(r"^backbone\.layers\.(\d+)", None)] if coarse else [
            (r"^backbone\.layers\.(\d+)\.blocks\.(\d+)", None),
            (r"^backbone\.layers\.(\d+)\.downsample", after_blocks),
        ]  # fmt: skip
        return {
            "stem": r"^backbone\.patch_embed",
            "blocks": [(rf"^backbone\.norm{last}\.", after_blocks), *stage, (r"^backbone\.norm(\d+)", None if coarse else after_blocks)],
        }


def build_model(cfg: FocalConfig, resolution: int) -> FeatureModel:
    return SeemFeatures(cfg)


def filter_state_dict(state_dict: StateDict, model: nn.Module | None = None) -> StateDict:
    """A SEEM checkpoint -> its ``backbone.*`` entries (kept verbatim); bare FocalNet keys get the prefix."""
    backbone = {k: v for k, v in state_dict.items() if k.startswith("backbone.")}
    if backbone:
        return backbone
    if "patch_embed.proj.weight" in state_dict:
        return {f"backbone.{k}": v for k, v in state_dict.items()}
    raise WeightsError(
        f"no 'backbone.*' entries in this checkpoint (first keys: {', '.join(list(state_dict)[:4])}); is it a SEEM "
        "release such as seem_focalt_v0.pt?"
    )


VARIANTS = {  # name -> (config, released file, description)
    "seem_focalt": (FOCAL_T, "seem_focalt_v0.pt", "SEEM Focal-T (focal_dw) image backbone"),
    "seem_focall": (FOCAL_L, "seem_focall_v0.pt", "SEEM Focal-L (focal) image backbone"),
}


for _name, (_cfg, _filename, _text) in VARIANTS.items():
    register(
        BackboneSpec(
            name=_name,
            family="seem",
            implementation=f"fmprobe FocalNet (SEEM {'focal_dw' if _cfg.depthwise else 'focal'})",
            build=partial(build_model, _cfg),
            preprocess=PREPROCESS,
            readouts=READOUTS,
            default_readout="res5",
            weights=WeightsInfo(
                hf=((HF_REPO, _filename),), license="apache-2.0",
                note=f"the v1 release ({_filename.replace('_v0', '_v1')}) has the same backbone layout",
            ),  # fmt: skip
            filter_state_dict=filter_state_dict,
            description=f"{_text}, trained on COCO panoptic / referring / interactive segmentation",
            paper="Zou et al., Segment Everything Everywhere All at Once (NeurIPS 2023)",
            extra={"strides": STRIDES},
        )
    )

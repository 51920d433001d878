"""timm family: the study's ImageNet baselines and the generic escape "any timm model name".

Preprocessing comes from timm's pretrained config of the exact weights tag; checkpoints are the timm Hub
files (``model.safetensors``), passed through the architecture's own ``checkpoint_filter_fn`` and loaded strictly.
"""

from __future__ import annotations

from functools import cache

import timm
import torch
from torch import nn

from fmprobe.backbones.base import BackboneSpec, FeatureModel, Preprocess, WeightsInfo, register
from fmprobe.backbones.timm_features import CNN_READOUTS, TOKEN_READOUTS, TimmFeatures, timm_checkpoint_filter

VIT_READOUTS = TOKEN_READOUTS


def timm_features(model: nn.Module, token_model: bool) -> TimmFeatures:
    """A timm CNN reads out its pooled pre-logits (channels-last); a token model its class token and patch mean."""
    if token_model:
        return TimmFeatures(model, VIT_READOUTS)
    return TimmFeatures(model, CNN_READOUTS, channels_last=True)


def is_token_model(model: nn.Module) -> bool:
    """A transformer with a class token (ViT, DeiT, DINO); CNNs and pooled-token models use 'pooled'."""
    return getattr(model, "num_prefix_tokens", 0) >= 1 and getattr(model, "global_pool", "token") == "token"


def create_timm(model_name: str, resolution: int | None = None) -> nn.Module:
    kwargs: dict[str, object] = {"pretrained": False, "num_classes": 0}
    if resolution is not None:
        try:
            return timm.create_model(model_name, img_size=resolution, **kwargs)
        except TypeError:  # CNNs take any input size and have no img_size argument
            pass
    return timm.create_model(model_name, **kwargs)


@cache
def _inspect(model_name: str) -> tuple[bool, float]:
    with torch.device("meta"):
        model = timm.create_model(model_name, pretrained=False, num_classes=0)
    return is_token_model(model), sum(p.numel() for p in model.parameters()) / 1e6


def timm_entry(
    model_name: str,
    name: str | None = None,
    description: str = "",
    paper: str = "",
    token_model: bool | None = None,
    imagenet_baseline: bool = False,
) -> BackboneSpec:
    """A registry entry for a timm ``architecture.tag`` (the tag picks the weights and their preprocessing)."""
    if not timm.is_model(model_name):
        raise KeyError(model_name)
    cfg = timm.get_pretrained_cfg(model_name.split(".")[0] if "." not in model_name else model_name)
    cfg = cfg or timm.get_pretrained_cfg(timm.models.get_arch_name(model_name))
    cfg_dict = cfg.to_dict() if cfg is not None else {}
    if token_model is None:
        token_model, params = _inspect(model_name)
    else:
        params = None
    size = int(cfg_dict.get("input_size", (3, 224, 224))[-1])
    preprocess = Preprocess(
        size=size,
        crop_pct=float(cfg_dict.get("crop_pct", 0.875)),
        interpolation=str(cfg_dict.get("interpolation", "bicubic")),
        mean=tuple(cfg_dict.get("mean", (0.485, 0.456, 0.406))),  # type: ignore[arg-type]
        std=tuple(cfg_dict.get("std", (0.229, 0.224, 0.225))),  # type: ignore[arg-type]
    )
    hub_id = str(cfg_dict.get("hf_hub_id") or f"timm/{model_name}")
    entry_name = name or model_name

    def build(resolution: int) -> FeatureModel:
        model = create_timm(model_name, resolution if token_model else None)
        return timm_features(model, bool(token_model))

    return BackboneSpec(
        name=entry_name,
        family="timm",
        implementation=f"timm {model_name}",
        build=build,
        preprocess=preprocess,
        readouts=VIT_READOUTS if token_model else CNN_READOUTS,
        default_readout="cls" if token_model else "pooled",
        weights=WeightsInfo(hf=((hub_id, "model.safetensors"),), license=str(cfg_dict.get("license", ""))),
        filter_state_dict=timm_checkpoint_filter,
        description=description or f"timm model {model_name}",
        paper=paper,
        params_m=params,
        imagenet_baseline=imagenet_baseline,
    )


# The study's ImageNet baselines, under the names a study file uses.
STUDY_BASELINES = {
    "resnet50_imagenet": ("resnet50.tv_in1k", "ResNet-50, supervised ImageNet-1k (torchvision weights)", False),
    "resnet152_imagenet": ("resnet152.tv_in1k", "ResNet-152, supervised ImageNet-1k (torchvision weights)", False),
    "deit_base_imagenet": ("deit_base_patch16_224.fb_in1k", "DeiT-B/16, supervised ImageNet-1k", True),
    "dino_vitb16_imagenet": ("vit_base_patch16_224.dino", "ViT-B/16, DINO self-supervised on ImageNet-1k", True),
}


for _name, (_model, _text, _token) in STUDY_BASELINES.items():
    register(timm_entry(_model, name=_name, description=_text, token_model=_token, imagenet_baseline=True))

"""timm family: the study's ImageNet baselines and the generic escape "any timm model name".

Preprocessing comes from timm's pretrained config of the exact weights tag; checkpoints are the timm Hub
files (``model.safetensors``), passed through the architecture's own ``checkpoint_filter_fn`` and loaded strictly.
"""

from __future__ import annotations

import sys
from functools import cache
from pathlib import Path

import timm
import torch
from torch import nn

from fmprobe.backbones.base import BackboneSpec, FeatureModel, Preprocess, StateDict, WeightsInfo
from fmprobe.backbones.weights import locate_hf_file

VIT_READOUTS = ("cls", "mean_patch", "cls_mean")
CNN_READOUTS = ("pooled",)


class TimmFeatures(FeatureModel):
    """Readouts of a timm model: pooled pre-logits for CNNs; CLS, patch mean or both for token models."""

    def __init__(self, model: nn.Module, token_model: bool) -> None:
        super().__init__()
        self.model = model
        self.token_model = token_model
        self.readouts = VIT_READOUTS if token_model else CNN_READOUTS
        self.channels_last = not token_model

    def forward_readouts(self, images: torch.Tensor, readouts: tuple[str, ...]) -> dict[str, torch.Tensor]:
        features = self.model.forward_features(images)
        if not self.token_model:
            pooled = self.model.forward_head(features, pre_logits=True)
            return {"pooled": pooled}
        prefix = int(getattr(self.model, "num_prefix_tokens", 1))
        cls = features[:, 0]
        mean = features[:, prefix:].mean(dim=1)
        out = {"cls": cls, "mean_patch": mean, "cls_mean": torch.cat([cls, mean], dim=-1)}
        return {name: out[name] for name in readouts}


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


def filter_timm_state_dict(state_dict: StateDict, model: nn.Module) -> StateDict:
    """Apply the architecture's own checkpoint filter (e.g. position-embedding resampling), drop the classifier."""
    inner = getattr(model, "model", model)
    module = sys.modules[type(inner).__module__]
    filter_fn = getattr(module, "checkpoint_filter_fn", None)
    if filter_fn is not None:
        state_dict = filter_fn(state_dict, inner)
    own = set(inner.state_dict())
    classifier = inner.pretrained_cfg.get("classifier", "head") if hasattr(inner, "pretrained_cfg") else "head"
    prefixes = (classifier,) if isinstance(classifier, str) else tuple(classifier)
    cleaned = {k: v for k, v in state_dict.items() if not (k not in own and k.startswith(prefixes))}
    return {f"model.{k}": v for k, v in cleaned.items()}


@cache
def _inspect(model_name: str) -> tuple[bool, float]:
    with torch.device("meta"):
        model = timm.create_model(model_name, pretrained=False, num_classes=0)
    return is_token_model(model), sum(p.numel() for p in model.parameters()) / 1e6


def timm_entry(
    model_name: str, name: str | None = None, description: str = "", paper: str = "", token_model: bool | None = None
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
        return TimmFeatures(model, token_model=bool(token_model))

    def locate() -> Path:
        return locate_hf_file(hub_id, "model.safetensors", entry_name)

    return BackboneSpec(
        name=entry_name,
        family="timm",
        implementation=f"timm {model_name}",
        build=build,
        preprocess=preprocess,
        readouts=VIT_READOUTS if token_model else CNN_READOUTS,
        default_readout="cls" if token_model else "pooled",
        weights=WeightsInfo("timm-hf", hub_id=hub_id, filename="model.safetensors", license=str(cfg_dict.get("license", ""))),
        locate_weights=locate,
        filter_state_dict=filter_timm_state_dict,
        description=description or f"timm model {model_name}",
        paper=paper,
        params_m=params,
    )


# The study's ImageNet baselines, under the names a study file uses.
STUDY_BASELINES = {
    "resnet50_imagenet": ("resnet50.tv_in1k", "ResNet-50, supervised ImageNet-1k (torchvision weights)", False),
    "resnet152_imagenet": ("resnet152.tv_in1k", "ResNet-152, supervised ImageNet-1k (torchvision weights)", False),
    "deit_base_imagenet": ("deit_base_patch16_224.fb_in1k", "DeiT-B/16, supervised ImageNet-1k", True),
    "dino_vitb16_imagenet": ("vit_base_patch16_224.dino", "ViT-B/16, DINO self-supervised on ImageNet-1k", True),
}


def study_baselines() -> list[BackboneSpec]:
    return [
        timm_entry(model, name=name, description=text, token_model=token)
        for name, (model, text, token) in STUDY_BASELINES.items()
    ]

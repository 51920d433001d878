"""timm family: the study's ImageNet baselines and the generic escape "any timm model name".

Preprocessing comes from timm's pretrained config of the exact weights tag; checkpoints are the timm Hub
files (``model.safetensors``), passed through the architecture's own ``checkpoint_filter_fn`` and loaded strictly.
"""

from __future__ import annotations

from functools import cache

import timm
import torch
from torch import nn

from fmprobe.backbones.base import BackboneSpec, FeatureModel, Preprocess, WeightsInfo, register, register_prefix
from fmprobe.backbones.catalog import HF_HUB, TIMM
from fmprobe.backbones.timm_features import CNN_READOUTS, TOKEN_READOUTS, TimmFeatures, timm_checkpoint_filter
from fmprobe.errors import WeightsError

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
def _inspect(model_name: str) -> tuple[bool, float, dict]:
    """(token model?, parameters in millions, pretrained config) from a shape-only build (an ``hf-hub:`` name reads
    the repo's config.json: from the local Hugging Face cache when offline)."""
    with torch.device("meta"):
        model = timm.create_model(model_name, pretrained=False, num_classes=0)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return is_token_model(model), sum(p.numel() for p in model.parameters()) / 1e6, dict(cfg)


def _pretrained_cfg(model_name: str) -> dict:
    cfg = timm.get_pretrained_cfg(model_name.split(".")[0] if "." not in model_name else model_name)
    cfg = cfg or timm.get_pretrained_cfg(timm.models.get_arch_name(model_name))
    return cfg.to_dict() if cfg is not None else {}


def timm_entry(
    model_name: str,
    name: str | None = None,
    description: str = "",
    paper: str = "",
    token_model: bool | None = None,
    imagenet_baseline: bool = False,
) -> BackboneSpec:
    """A registry entry for a timm ``architecture.tag`` (the tag picks the weights and their preprocessing), or
    for timm's ``hf-hub:ORG/REPO`` (the repo's config.json says both)."""
    hub = model_name.startswith(HF_HUB)
    if not hub and not timm.is_model(model_name):
        raise KeyError(model_name)
    params = None
    if hub:
        token_model, params, cfg_dict = _hub_inspect(model_name)
    else:
        cfg_dict = _pretrained_cfg(model_name)
        if token_model is None:
            token_model, params, _ = _inspect(model_name)
    size = int(cfg_dict.get("input_size", (3, 224, 224))[-1])
    preprocess = Preprocess(
        size=size,
        crop_pct=float(cfg_dict.get("crop_pct", 0.875)),
        interpolation=str(cfg_dict.get("interpolation", "bicubic")),
        mean=tuple(cfg_dict.get("mean", (0.485, 0.456, 0.406))),  # type: ignore[arg-type]
        std=tuple(cfg_dict.get("std", (0.229, 0.224, 0.225))),  # type: ignore[arg-type]
    )
    hub_id = model_name[len(HF_HUB):] if hub else str(cfg_dict.get("hf_hub_id") or f"timm/{model_name}")
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
        aliases=(model_name, f"{TIMM}{model_name}", f"{HF_HUB}{hub_id}") if name and name != model_name else (),
    )


def _hub_inspect(model_name: str) -> tuple[bool, float, dict]:
    """:func:`_inspect` for ``hf-hub:ORG/REPO``, a missing config.json named with the command that fetches it."""
    try:
        return _inspect(model_name)
    except Exception as err:  # the hub library and timm raise several types for "not cached / not a timm repo"
        repo = model_name[len(HF_HUB):]
        raise WeightsError(
            f"{model_name!r}: cannot read the timm config.json of {repo} ({type(err).__name__}). Offline, fetch it "
            f"first: `hf download {repo} config.json model.safetensors`; or is it not a timm model (then hf:{repo})?"
        ) from None


def timm_prefixed(name: str) -> BackboneSpec:
    """``timm:NAME``: timm's own NAME, also where fmprobe registers an entry or alias of that name."""
    bare = name[len(TIMM):]
    if not timm.is_model(bare):
        from fmprobe.backbones.catalog import unknown_backbone

        raise unknown_backbone(bare, list(timm.list_models()))
    return timm_entry(bare, name=name)


# The study's ImageNet baselines, under the names a study file uses.
STUDY_BASELINES = {
    "resnet50_imagenet": ("resnet50.tv_in1k", "ResNet-50, supervised ImageNet-1k (torchvision weights)", False),
    "resnet152_imagenet": ("resnet152.tv_in1k", "ResNet-152, supervised ImageNet-1k (torchvision weights)", False),
    "deit_base_imagenet": ("deit_base_patch16_224.fb_in1k", "DeiT-B/16, supervised ImageNet-1k", True),
    "dino_vitb16_imagenet": ("vit_base_patch16_224.dino", "ViT-B/16, DINO self-supervised on ImageNet-1k", True),
}


for _name, (_model, _text, _token) in STUDY_BASELINES.items():
    register(timm_entry(_model, name=_name, description=_text, token_model=_token, imagenet_baseline=True))
register_prefix(TIMM, timm_prefixed)
register_prefix(HF_HUB, timm_entry)

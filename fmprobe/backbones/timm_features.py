"""The one adapter, checkpoint filter and entry helper for every family that runs on a timm network.

timm CNNs (ResNet, EfficientNet-Lite), timm ViTs and the foundation families on timm's maintained
implementations (DINOv2, RAD-DINO, BLIP's encoder, MAE, DINOv3, AIMv2, SAM, SAM 2) share them: the family file
builds the timm model and converts the authors' checkpoint; :class:`TimmFeatures` turns the network's output
into the named readouts, and ``block:K`` into block K's output (0-based, passed through the final norm as
DINOv2's ``get_intermediate_layers(norm=True)`` does): its class token, or its patch mean for models without one.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import partial

import torch
from torch import nn

from fmprobe.backbones.base import BackboneSpec, FeatureModel, Preprocess, StateDict, WeightsInfo
from fmprobe.errors import FmprobeError

BLOCK_PATTERN = r"block:\d+"
TOKEN_READOUTS = ("cls", "mean_patch", "cls_mean")
CNN_READOUTS = ("pooled",)


class TimmFeatures(FeatureModel):
    """Readouts of a timm network: ``cls`` (final-norm class token), ``mean_patch`` (mean of final-norm patch
    tokens, registers excluded), ``cls_mean`` (both, concatenated), ``pooled`` (the model's own head pooling,
    pre-logits: a CNN's global pool, MAP or average) and ``block:K``."""

    def __init__(self, model: nn.Module, readouts: tuple[str, ...] = TOKEN_READOUTS, channels_last: bool = False) -> None:
        super().__init__()
        self.model = model
        self.readouts = readouts
        self.channels_last = channels_last
        self.num_prefix = int(getattr(model, "num_prefix_tokens", 0))
        self.has_cls = getattr(model, "cls_token", None) is not None

    def forward_readouts(self, images: torch.Tensor, readouts: tuple[str, ...]) -> dict[str, torch.Tensor]:
        blocks = sorted({int(r.split(":", 1)[1]) for r in readouts if r.startswith("block:")})
        out: dict[str, torch.Tensor] = {}
        if blocks:
            final = self._with_blocks(images, blocks, out)
        else:
            final = self.model.forward_features(images)
        wanted = set(readouts)
        if wanted & {"cls", "cls_mean"}:
            if not self.has_cls:
                raise FmprobeError("readout 'cls' needs a class token; this backbone has none (use mean_patch).")
            out["cls"] = final[:, 0]
        if wanted & {"mean_patch", "cls_mean"}:
            out["mean_patch"] = final[:, self.num_prefix :].mean(dim=1)
        if "cls_mean" in wanted:
            out["cls_mean"] = torch.cat([out["cls"], out["mean_patch"]], dim=-1)
        if "pooled" in wanted:
            out["pooled"] = self.model.forward_head(final, pre_logits=True)
        return {name: out[name] for name in readouts}

    def _with_blocks(self, images: torch.Tensor, blocks: list[int], out: dict[str, torch.Tensor]) -> torch.Tensor:
        """The final features, with the ``block:K`` readouts written into ``out`` on the way."""
        depth = len(self.model.blocks)
        if blocks[-1] >= depth:
            raise FmprobeError(f"readout block:{blocks[-1]} does not exist: this backbone has blocks 0-{depth - 1}.")
        final, inter = self.model.forward_intermediates(
            images, indices=blocks, norm=True, output_fmt="NLC", return_prefix_tokens=True
        )
        for index, item in zip(blocks, inter, strict=True):
            spatial, prefix = item if isinstance(item, tuple) else (item, None)
            if prefix is not None and prefix.shape[1] == 0:
                prefix = None
            out[f"block:{index}"] = prefix[:, 0] if (prefix is not None and self.has_cls) else spatial.mean(dim=1)
        return final


def build_timm_tokens(arch: str, resolution: int, readouts: tuple[str, ...] = TOKEN_READOUTS, **overrides: object) -> FeatureModel:
    """A randomly initialised timm token model at ``resolution`` wrapped with the readouts its entry lists
    (``overrides``, e.g. ``depth=2``, make small test models)."""
    import timm

    model = timm.create_model(arch, pretrained=False, num_classes=0, img_size=resolution, **overrides)
    return TimmFeatures(model, readouts)


def classifier_prefixes(model: nn.Module) -> tuple[str, ...]:
    """The classifier's key prefixes per the network's timm pretrained config (``head``, ``fc``, ``classifier``)."""
    classifier = model.pretrained_cfg.get("classifier", "head") if hasattr(model, "pretrained_cfg") else "head"
    return (classifier,) if isinstance(classifier, str) else tuple(classifier)


def timm_checkpoint_filter(state_dict: StateDict, model: nn.Module, drop: tuple[str, ...] = ()) -> StateDict:
    """The architecture's own timm ``checkpoint_filter_fn`` (it converts the authors' layout where timm knows it,
    and resamples position embeddings); then the classifier and the named pre-training-only entries ``drop``
    (e.g. an MAE decoder) are left out where the model has no such key, and keys are put under ``model.``."""
    inner = getattr(model, "model", model)
    sd = {k: v for k, v in state_dict.items() if not k.startswith(drop)} if drop else dict(state_dict)
    filter_fn = getattr(sys.modules[type(inner).__module__], "checkpoint_filter_fn", None)
    if filter_fn is not None:
        sd = filter_fn(sd, inner)
    own = inner.state_dict()
    leave_out = classifier_prefixes(inner) + drop
    return {f"model.{k}": v for k, v in sd.items() if k in own or not k.startswith(leave_out)}


def timm_family_entry(
    name: str,
    family: str,
    arch: str,
    *,
    weights: WeightsInfo,
    preprocess: Preprocess,
    description: str,
    paper: str,
    readouts: tuple[str, ...] = TOKEN_READOUTS,
    default_readout: str = "cls",
    build: Callable[[int], FeatureModel] | None = None,
    filter_state_dict: Callable[[StateDict, nn.Module], StateDict] = timm_checkpoint_filter,
    readout_patterns: tuple[str, ...] | None = None,
    implementation: str = "",
) -> BackboneSpec:
    """The registry entry of a family variant on timm architecture ``arch``: by default a token model
    (``build_timm_tokens``, ``block:K`` readouts, timm's checkpoint filter); ``build`` replaces the builder
    (then no ``block:K`` unless ``readout_patterns`` says so)."""
    if readout_patterns is None:
        readout_patterns = (BLOCK_PATTERN,) if build is None else ()
    return BackboneSpec(
        name=name,
        family=family,
        implementation=implementation or f"timm {arch}",
        build=build or partial(build_timm_tokens, arch, readouts=readouts),
        preprocess=preprocess,
        readouts=readouts,
        default_readout=default_readout,
        readout_patterns=readout_patterns,
        weights=weights,
        filter_state_dict=filter_state_dict,
        description=description,
        paper=paper,
    )

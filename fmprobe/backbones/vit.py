"""Readouts of a timm token model (ViT, DINOv2, BLIP's encoder, MAE, DINOv3, AIMv2).

Shared by the families that run on timm's maintained transformer implementations: the family file builds the
timm model and converts the authors' checkpoint; this adapter turns the final-norm token sequence into the named
readouts, and ``block:K`` into block K's output (0-based, passed through the final norm as DINOv2's
``get_intermediate_layers(norm=True)`` does): its class token, or its patch mean for models without one.
"""

from __future__ import annotations

import torch
from torch import nn

from fmprobe.backbones.base import FeatureModel
from fmprobe.errors import FmprobeError

BLOCK_PATTERN = r"block:\d+"
TOKEN_READOUTS = ("cls", "mean_patch", "cls_mean")


class TimmTokenFeatures(FeatureModel):
    """``cls`` (final-norm class token), ``mean_patch`` (mean of final-norm patch tokens, registers excluded),
    ``cls_mean`` (both, concatenated), ``pooled`` (the model's own head pooling, pre-logits: MAP or average) and
    ``block:K``."""

    def __init__(self, model: nn.Module, readouts: tuple[str, ...] = TOKEN_READOUTS) -> None:
        super().__init__()
        self.model = model
        self.readouts = readouts
        self.num_prefix = int(getattr(model, "num_prefix_tokens", 0))
        self.has_cls = getattr(model, "cls_token", None) is not None

    def forward_readouts(self, images: torch.Tensor, readouts: tuple[str, ...]) -> dict[str, torch.Tensor]:
        blocks = sorted({int(r.split(":", 1)[1]) for r in readouts if r.startswith("block:")})
        depth = len(self.model.blocks)
        if blocks and blocks[-1] >= depth:
            raise FmprobeError(f"readout block:{blocks[-1]} does not exist: this backbone has blocks 0-{depth - 1}.")
        out: dict[str, torch.Tensor] = {}
        if blocks:
            final, inter = self.model.forward_intermediates(
                images, indices=blocks, norm=True, output_fmt="NLC", return_prefix_tokens=True
            )
            for index, item in zip(blocks, inter, strict=True):
                spatial, prefix = item if isinstance(item, tuple) else (item, None)
                if prefix is not None and prefix.shape[1] == 0:
                    prefix = None
                out[f"block:{index}"] = prefix[:, 0] if (prefix is not None and self.has_cls) else spatial.mean(dim=1)
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


def build_timm_tokens(arch: str, readouts: tuple[str, ...], resolution: int, **overrides: object) -> FeatureModel:
    """A randomly initialised timm token model at ``resolution`` wrapped with the readouts its entry lists."""
    import timm

    model = timm.create_model(arch, pretrained=False, num_classes=0, img_size=resolution, **overrides)
    return TimmTokenFeatures(model, readouts)


def timm_checkpoint_filter(state_dict: dict[str, torch.Tensor], model: nn.Module, drop: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """The architecture's own timm ``checkpoint_filter_fn`` (it converts the authors' layout where timm knows it,
    and resamples position embeddings), then the classifier ``head.*`` and the named pre-training-only entries
    ``drop`` (e.g. an MAE decoder) are left out, and keys are put under ``model.``."""
    import sys

    inner = getattr(model, "model", model)
    sd = {k: v for k, v in state_dict.items() if not k.startswith(drop)} if drop else dict(state_dict)
    filter_fn = getattr(sys.modules[type(inner).__module__], "checkpoint_filter_fn", None)
    if filter_fn is not None:
        sd = filter_fn(sd, inner)
    own = inner.state_dict()
    return {f"model.{k}": v for k, v in sd.items() if k in own or not k.startswith(("head.",) + drop)}

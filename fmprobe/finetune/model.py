"""Backbone + head as one trainable module, with the freezing policy of each setting.

Everything a setting needs from the backbone comes through the :class:`~fmprobe.backbones.FeatureModel`
interface, so every family that provides it supports every setting:

* ``attention`` reads ``FeatureModel.tokens(images)`` (patch tokens ``[B, N, D]``);
* ``partial:K`` trains the last K of ``FeatureModel.block_groups().blocks``, the ``tail`` after them (final norm,
  EfficientNet's ``conv_head``/``bn2``, ...) and the head;
* ``--layer-decay`` hands :meth:`FinetuneModel.group_matcher` (the backbone's, under ``backbone.``, head last) to
  timm's ``param_groups_layer_decay``.

Frozen modules stay in eval mode, so their BatchNorm statistics do not move either: frozen parameters and buffers
are bit-identical after training.
"""

from __future__ import annotations

import torch
from torch import nn

from fmprobe.backbones import FeatureModel
from fmprobe.backbones.base import GroupMatcher, prefixed_matcher
from fmprobe.finetune.heads import make_head
from fmprobe.finetune.recipe import FinetuneError, Recipe

SUPPORTED = (
    "Supported: every backbone whose family defines FeatureModel.group_matcher / block_groups (the timm ViTs, "
    "EfficientNet/MobileNet, ResNet, ConvNeXt-like, ...)."
)


def architecture(feature_model: FeatureModel) -> str:
    return type(feature_model).__name__


class FinetuneModel(nn.Module):
    """images -> logits. ``trainable_prefixes`` names (by state-dict prefix) everything a setting trains."""

    def __init__(
        self,
        backbone: FeatureModel,
        readout: str,
        num_outputs: int,
        recipe: Recipe,
        resolution: int,
        head_weights: str | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.readout = readout
        self.kind = recipe.kind
        self.in_dim = self._feature_width(resolution)
        self.head = make_head(self.kind, self.in_dim, num_outputs, recipe.head, head_weights)
        trained = self._trained_names(recipe)
        for name, param in self.named_parameters():
            param.requires_grad_(name in trained)
        self.trainable_prefixes, self._trainable_names = _trained_prefixes(self)
        if recipe.grad_checkpointing and recipe.trains_backbone:
            _enable_grad_checkpointing(backbone)

    def _feature_width(self, resolution: int) -> int:
        device = next(self.backbone.parameters()).device
        try:
            with torch.no_grad():
                probe = self.features(torch.zeros(1, 3, resolution, resolution, device=device))
        except NotImplementedError:
            if self.kind != "attention":
                raise
            raise FinetuneError(
                f"setting 'attention' needs patch tokens, and backbone architecture {architecture(self.backbone)} "
                "does not expose them (FeatureModel.tokens). Use a backbone that does (ViT, DINOv2, DeiT, "
                "EfficientNet, ResNet, ...) or the linear / partial:K / full settings."
            ) from None
        return int(probe.shape[-1])

    def _trained_names(self, recipe: Recipe) -> set[str]:
        """Parameter names (relative to this module) the setting trains."""
        head = {f"head.{n}" for n, _ in self.head.named_parameters()}
        if self.kind == "full":
            return {n for n, _ in self.named_parameters()}
        if self.kind != "partial":
            return head
        try:
            groups = self.backbone.block_groups()
        except NotImplementedError:
            groups = None
        if groups is None or not groups.blocks:
            raise FinetuneError(
                f"setting partial:K: backbone architecture {architecture(self.backbone)} does not define its "
                f"blocks, so the top K are not known. {SUPPORTED} Use --setting full or linear."
            )
        k = recipe.top_blocks
        if k > len(groups.blocks):
            raise FinetuneError(
                f"--setting partial:{k}: {architecture(self.backbone)} has {len(groups.blocks)} blocks; use K from 1 "
                f"to {len(groups.blocks)}, or full."
            )
        backbone = [n for block in groups.blocks[-k:] for n in block] + list(groups.tail)
        return head | {f"backbone.{n}" for n in backbone}

    def is_trainable(self, name: str) -> bool:
        return name in self._trainable_names or any(name.startswith(p) for p in self.trainable_prefixes)

    @property
    def frozen_backbone(self) -> bool:
        return self.kind in ("linear", "attention")

    def features(self, images: torch.Tensor) -> torch.Tensor:
        if self.kind == "attention":
            return self.backbone.tokens(images)
        return self.backbone.forward_readouts(images, (self.readout,))[self.readout]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.frozen_backbone:
            with torch.no_grad():
                features = self.features(images)
        else:
            features = self.features(images)
        return self.head(features)

    def train(self, mode: bool = True) -> FinetuneModel:
        """Train mode reaches only the trained modules; frozen ones (and their BatchNorm statistics) stay in eval."""
        super().train(False)
        if mode and self.is_trainable(""):
            super().train(True)
        elif mode:
            for name, module in self.named_modules():
                if name and self.is_trainable(f"{name}."):
                    module.train(True)
        return self

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """What a checkpoint stores: every parameter and buffer under a trained prefix (clones, on the CPU)."""
        return {k: v.detach().to("cpu", copy=True) for k, v in self.state_dict().items() if self.is_trainable(k)}

    def load_trainable(self, state: dict[str, torch.Tensor], where: str) -> None:
        expected = {k for k in self.state_dict() if self.is_trainable(k)}
        if set(state) != expected:
            missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
            raise FinetuneError(
                f"{where}: checkpoint does not match this run's model (missing {missing[:3]}, unexpected {extra[:3]}); "
                "it was written by a different setting or backbone. Use --force to start afresh."
            )
        result = self.load_state_dict(state, strict=False)
        if result.unexpected_keys:  # pragma: no cover - ruled out above
            raise FinetuneError(f"{where}: unexpected keys {result.unexpected_keys[:3]}")

    def group_matcher(self, coarse: bool = False) -> GroupMatcher:
        """timm's convention over this module's names: the backbone's groups under ``backbone.``, then the head
        as a layer of its own after everything (timm merges a backbone's tail, e.g. the final norm, into the last
        block's layer)."""
        return {**prefixed_matcher(self.backbone.group_matcher(coarse), "backbone."), "head": r"^head\."}

    def param_groups(self, lr: float, weight_decay: float, layer_decay: float | None) -> list[dict[str, object]]:
        """AdamW groups: one, or with ``layer_decay`` timm's ``param_groups_layer_decay`` over
        :meth:`group_matcher` (the head gets lr, the last block and the tail lr * layer_decay, ..., the stem
        lr * layer_decay ** (blocks + 1); no weight decay on 1-D parameters and biases), each with its ``lr`` set,
        in increasing order of lr (the head's group last)."""
        params = [p for p in self.parameters() if p.requires_grad]
        if not layer_decay or layer_decay == 1.0:
            return [{"params": params, "lr": lr, "weight_decay": weight_decay, "lr_scale": 1.0}]
        from timm.optim import param_groups_layer_decay

        try:
            self.group_matcher()
        except NotImplementedError:
            raise FinetuneError(
                f"--layer-decay: blocks of {architecture(self.backbone)} are not known; drop the option."
            ) from None
        groups = param_groups_layer_decay(self, weight_decay=weight_decay, layer_decay=layer_decay)
        for group in groups:
            group["lr"] = lr * float(group["lr_scale"])
        return sorted(groups, key=lambda g: float(g["lr_scale"]))


def _trained_prefixes(model: nn.Module) -> tuple[tuple[str, ...], frozenset[str]]:
    """The outermost modules whose parameters all train (as state-dict prefixes: their buffers, and the train
    mode of their parameter-free children such as drop-path, come with them), and the trained parameters that no
    such module holds."""
    whole = {
        name
        for name, module in model.named_modules()
        if (params := list(module.parameters())) and all(p.requires_grad for p in params)
    }
    if "" in whole:
        return ("",), frozenset()
    outermost = [n for n in whole if not any(n.startswith(f"{o}.") for o in whole if o != n)]
    prefixes = tuple(sorted(f"{n}." for n in outermost))
    loose = frozenset(n for n, p in model.named_parameters() if p.requires_grad and not n.startswith(prefixes))
    return prefixes, loose


def _enable_grad_checkpointing(backbone: FeatureModel) -> None:
    """The first module (the backbone itself, then its networks) that offers timm's ``set_grad_checkpointing``."""
    for module in backbone.modules():
        if callable(getattr(module, "set_grad_checkpointing", None)):
            module.set_grad_checkpointing(True)
            return
    raise FinetuneError(f"--grad-checkpointing: {architecture(backbone)} does not support it; drop the option.")

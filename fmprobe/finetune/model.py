"""Backbone + head as one trainable module, with the freezing policy of each setting.

"Blocks" per architecture (for ``partial:K``), in forward order, on the wrapped timm network:

* timm ViTs (ViT, DeiT, DINO, DINOv2, ...) and EfficientNet / MobileNet: ``blocks`` (ViT: transformer blocks;
  EfficientNet: its stages, 7 for Lite0);
* ResNet: ``layer1`` .. ``layer4``; ConvNeXt and other staged timm models: ``stages``.

``partial:K`` trains the last K blocks, everything after them (final norm, EfficientNet's ``conv_head``/``bn2``,
ConvNeXt's head norm) and the head. Frozen modules stay in eval mode, so their BatchNorm statistics do not move
either: frozen parameters and buffers are bit-identical after training.
"""

from __future__ import annotations

import torch
from torch import nn

from fmprobe.backbones import FeatureModel
from fmprobe.finetune.heads import architecture, make_head, timm_network, token_readout
from fmprobe.finetune.recipe import FinetuneError, Recipe

TAIL_MODULES = (
    "norm",
    "attn_pool",
    "fc_norm",
    "conv_head",
    "bn2",
    "final_conv",
    "head",
)  # after the last block, in timm's naming


def backbone_blocks(feature_model: FeatureModel) -> tuple[str, list[str], list[str]]:
    """(prefix of the timm network inside the adapter, block names in forward order, tail module names)."""
    net = timm_network(feature_model)
    if net is None:
        raise FinetuneError(
            f"setting partial:K: backbone architecture {architecture(feature_model)} is not a timm network, so its "
            "blocks are not known. Supported: timm ViTs (blocks), EfficientNet/MobileNet (blocks = stages), ResNet "
            "(layer1-4), ConvNeXt-like (stages). Use --setting full or linear."
        )
    blocks = getattr(net, "blocks", None)
    stages = getattr(net, "stages", None)
    if isinstance(blocks, (nn.Sequential, nn.ModuleList)) and len(blocks):
        names = [f"blocks.{i}" for i in range(len(blocks))]
    elif isinstance(stages, (nn.Sequential, nn.ModuleList)) and len(stages):
        names = [f"stages.{i}" for i in range(len(stages))]
    elif all(isinstance(getattr(net, f"layer{i}", None), nn.Module) for i in (1, 2, 3, 4)):
        names = [f"layer{i}" for i in (1, 2, 3, 4)]
    else:
        raise FinetuneError(
            f"setting partial:K: architecture {type(net).__name__} has no 'blocks', 'stages' or 'layer1-4'; its blocks "
            "are not defined. Supported: timm ViTs, EfficientNet/MobileNet, ResNet, ConvNeXt. Use --setting full or linear."
        )
    tail = [
        n
        for n in TAIL_MODULES
        if isinstance(getattr(net, n, None), nn.Module) and any(True for _ in getattr(net, n).parameters())
    ]
    return "backbone.model.", names, tail


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
        self._tokens = token_readout(backbone) if self.kind == "attention" else None
        with torch.no_grad():
            probe = self.features(torch.zeros(1, 3, resolution, resolution, device=next(backbone.parameters()).device))
        self.in_dim = int(probe.shape[-1])
        self.head = make_head(self.kind, self.in_dim, num_outputs, recipe.head, head_weights)
        self.backbone.requires_grad_(False)
        if self.kind == "full":
            self.trainable_prefixes: tuple[str, ...] = ("",)
        elif self.kind == "partial":
            prefix, blocks, tail = backbone_blocks(backbone)
            k = recipe.top_blocks
            if k > len(blocks):
                raise FinetuneError(
                    f"--setting partial:{k}: {architecture(backbone)} has {len(blocks)} blocks "
                    f"({blocks[0]} .. {blocks[-1]}); use K from 1 to {len(blocks)}, or full."
                )
            self.trainable_prefixes = ("head.", *(f"{prefix}{n}." for n in blocks[-k:] + tail))
        else:
            self.trainable_prefixes = ("head.",)
        for name, param in self.named_parameters():
            param.requires_grad_(self.is_trainable(name))
        if recipe.grad_checkpointing and recipe.trains_backbone:
            net = timm_network(backbone)
            if net is None or not hasattr(net, "set_grad_checkpointing"):
                raise FinetuneError(
                    f"--grad-checkpointing: {architecture(backbone)} does not support it; drop the option."
                )
            net.set_grad_checkpointing(True)

    def is_trainable(self, name: str) -> bool:
        return any(name.startswith(p) for p in self.trainable_prefixes)

    @property
    def frozen_backbone(self) -> bool:
        return self.kind in ("linear", "attention")

    def features(self, images: torch.Tensor) -> torch.Tensor:
        if self._tokens is not None:
            return self._tokens(images)
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

    def param_groups(self, lr: float, weight_decay: float, layer_decay: float | None) -> list[dict[str, object]]:
        """AdamW groups: one, or with ``layer_decay`` one per depth (embeddings 0, block i -> i+1, tail and head
        last), each with lr * layer_decay ** (depth - layer)."""
        params = [(n, p) for n, p in self.named_parameters() if p.requires_grad]
        if not layer_decay or layer_decay == 1.0:
            return [{"params": [p for _, p in params], "lr": lr, "weight_decay": weight_decay, "lr_scale": 1.0}]
        if not _has_blocks(self.backbone):
            raise FinetuneError(
                f"--layer-decay: blocks of {architecture(self.backbone)} are not known; drop the option."
            )
        prefix, blocks, _ = backbone_blocks(self.backbone)
        depth = len(blocks) + 1
        groups: dict[int, list[torch.nn.Parameter]] = {}
        for name, param in params:
            layer = depth
            if name.startswith(prefix):
                layer = 0
                for i, block in enumerate(blocks):
                    if name.startswith(f"{prefix}{block}."):
                        layer = i + 1
                tail = name.removeprefix(prefix).split(".")[0]
                if tail in TAIL_MODULES:
                    layer = depth
            groups.setdefault(layer, []).append(param)
        return [
            {
                "params": ps,
                "lr": lr * layer_decay ** (depth - layer),
                "weight_decay": weight_decay,
                "lr_scale": layer_decay ** (depth - layer),
            }
            for layer, ps in sorted(groups.items())
        ]


def _has_blocks(feature_model: FeatureModel) -> bool:
    try:
        backbone_blocks(feature_model)
    except FinetuneError:
        return False
    return True

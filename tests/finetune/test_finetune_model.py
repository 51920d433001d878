"""fmprobe/finetune/model.py: what each setting trains, read only through the FeatureModel interface (tokens,
group_matcher, block_groups), for timm-backed families and a family with no timm network at all."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fmprobe.backbones import FeatureModel, create_backbone
from fmprobe.backbones.base import TAIL_ORDINAL
from fmprobe.finetune import FinetuneError, Recipe
from fmprobe.finetune.model import FinetuneModel


def _trained(model: FinetuneModel) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("name", ["efficientnet_lite0_imagenet", "test_vit", "test_resnet"])
def test_partial_trains_the_last_blocks_the_tail_and_the_head(name: str) -> None:
    backbone = create_backbone(f"{name}:random", resolution=32).model
    groups = backbone.block_groups()
    model = FinetuneModel(backbone, "pooled" if "vit" not in name else "cls", 3, Recipe("partial:2"), 32)
    expected = {f"backbone.{n}" for n in [*groups.blocks[-2], *groups.blocks[-1], *groups.tail]}
    assert _trained(model) == expected | {n for n in _trained(model) if n.startswith("head.")}
    assert {n for n in _trained(model) if n.startswith("head.")} == {
        f"head.{n}" for n, _ in model.head.named_parameters()
    }
    model.train()
    block = groups.blocks[-1][0].rsplit(".", 2)[0] if name == "test_vit" else None
    if block:  # parameter-free children of a trained block (drop-path, dropout) train with it
        assert all(m.training for n, m in backbone.named_modules() if n.startswith(block.removesuffix(".")))
    assert not backbone.get_submodule(groups.stem[0].rsplit(".", 1)[0]).training  # frozen stays in eval mode


def test_partial_keeps_the_state_dict_prefixes_of_before() -> None:
    """Checkpoints of EfficientNet-Lite0 partial:1 hold the same tensors (BatchNorm buffers included) as before."""
    model = FinetuneModel(create_backbone("efficientnet_lite0_imagenet:random", resolution=32).model, "pooled", 2,
                          Recipe("partial:1"), 32)  # fmt: skip
    assert model.trainable_prefixes == (
        "backbone.model.blocks.6.", "backbone.model.bn2.", "backbone.model.conv_head.", "head."
    )  # fmt: skip
    assert "backbone.model.bn2.running_var" in model.trainable_state()
    assert FinetuneModel(model.backbone, "pooled", 2, Recipe("full"), 32).trainable_prefixes == ("",)
    with pytest.raises(FinetuneError, match="has 7 blocks; use K from 1 to 7"):
        FinetuneModel(model.backbone, "pooled", 2, Recipe("partial:8"), 32)


class Plain(FeatureModel):
    """A family that exposes neither tokens nor blocks."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward_readouts(self, images, readouts):
        return {"pooled": self.net(images)}


class Tokens(FeatureModel):
    """A family with no timm network that still provides the fine-tuning views: every setting works."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 4, stride=4)
        self.blocks = nn.ModuleList([nn.Conv2d(4, 4, 1) for _ in range(3)])
        self.norm = nn.GroupNorm(1, 4)

    def _map(self, images: torch.Tensor) -> torch.Tensor:
        x = self.stem(images)
        for block in self.blocks:
            x = x + block(x)
        return self.norm(x)

    def forward_readouts(self, images, readouts):
        return {"pooled": self._map(images).mean((2, 3))}

    def tokens(self, images: torch.Tensor) -> torch.Tensor:
        return self._map(images).flatten(2).transpose(1, 2)

    def group_matcher(self, coarse: bool = False):
        return {"stem": r"^stem", "blocks": [(r"^blocks\.(\d+)", None), (r"^norm", (TAIL_ORDINAL,))]}


def test_families_without_tokens_or_blocks_get_the_finetune_errors() -> None:
    with pytest.raises(FinetuneError, match=r"partial:K: backbone architecture Plain does not define its blocks"):
        FinetuneModel(Plain(), "pooled", 2, Recipe("partial:1"), 16)
    with pytest.raises(FinetuneError, match=r"attention.*Plain does not expose them"):
        FinetuneModel(Plain(), "pooled", 2, Recipe("attention"), 16)
    with pytest.raises(FinetuneError, match="--layer-decay"):
        FinetuneModel(Plain(), "pooled", 2, Recipe("full"), 16).param_groups(1.0, 0.0, 0.5)
    with pytest.raises(FinetuneError, match="--grad-checkpointing"):
        FinetuneModel(Plain(), "pooled", 2, Recipe("full", grad_checkpointing=True), 16)


def test_a_family_without_a_timm_network_supports_every_setting() -> None:
    partial = FinetuneModel(Tokens(), "pooled", 2, Recipe("partial:1"), 16)
    assert {n for n in _trained(partial) if n.startswith("backbone.")} == {
        "backbone.blocks.2.weight", "backbone.blocks.2.bias", "backbone.norm.weight", "backbone.norm.bias"
    }  # fmt: skip
    attention = FinetuneModel(Tokens(), "pooled", 3, Recipe("attention"), 16)
    assert attention(torch.zeros(2, 3, 16, 16)).shape == (2, 3) and attention.in_dim == 4
    groups = partial.param_groups(1.0, 0.1, 0.5)
    scales = {n: g["lr"] for g in groups for n, p in partial.named_parameters() for q in g["params"] if p is q}
    assert (
        scales["backbone.blocks.2.weight"] == scales["backbone.norm.weight"] == 0.5 and scales["head.fc.weight"] == 1.0
    )


def test_layer_decay_uses_timms_groups() -> None:
    """timm's param_groups_layer_decay: lr * decay ** (depth - layer). Intended changes from the hand-written
    groups: no weight decay on 1-D parameters (biases, norms, tokens), and the tail (final norm) shares the last
    block's layer (timm's convention) instead of the head's."""
    model = FinetuneModel(create_backbone("test_vit:random", resolution=32).model, "cls", 2, Recipe("full"), 32)
    depth = len(model.backbone.block_groups().blocks) + 1
    groups = model.param_groups(2.0, 0.1, 0.5)
    by_name = {n: g for g in groups for n, p in model.named_parameters() for q in g["params"] if p is q}
    assert by_name["backbone.model.patch_embed.proj.weight"]["lr"] == 2.0 * 0.5**depth  # the stem gets the least
    assert by_name["backbone.model.blocks.0.attn.qkv.weight"]["lr"] == 2.0 * 0.5 ** (depth - 1)
    assert by_name["head.fc.weight"]["lr"] == 2.0
    assert (
        by_name["backbone.model.norm.weight"]["lr"]
        == by_name[f"backbone.model.blocks.{depth - 2}.mlp.fc1.weight"]["lr"]
        == 1.0
    )
    assert by_name["head.fc.weight"]["weight_decay"] == 0.1 and by_name["head.fc.bias"]["weight_decay"] == 0.0
    assert groups[-1]["lr"] == 2.0  # the head's group last: the training log reports its lr
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    one = model.param_groups(2.0, 0.1, None)
    assert len(one) == 1 and one[0]["weight_decay"] == 0.1  # without layer decay: one group, as before

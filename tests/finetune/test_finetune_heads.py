"""fmprobe/finetune/heads.py: the heads read FeatureModel.tokens; the DeiT head loads a ViT-B block strictly."""

from __future__ import annotations

import pytest
import torch

from fmprobe.backbones import create_backbone
from fmprobe.errors import WeightsError
from fmprobe.finetune.heads import DeitBlockHead, make_head


def test_tokens_and_heads() -> None:
    vit = create_backbone("test_vit:random", resolution=32).model
    cnn = create_backbone("efficientnet_lite0_imagenet:random", resolution=64).model
    x = torch.zeros(2, 3, 64, 64)
    assert vit.tokens(x[..., :32, :32]).shape == (2, 4, vit.model.embed_dim)  # 2x2 patches, no class token
    assert cnn.tokens(x).shape == (2, 4, 1280)  # a 2x2 map flattened
    head = make_head("attention", 1280, 3)
    assert head(torch.randn(2, 4, 1280)).shape == (2, 3)
    with pytest.raises(WeightsError, match="--head-weights"):  # hub offline in tests, no DeiT-B file here
        make_head("attention", 1280, 3, head="deit")
    deit = DeitBlockHead(16, 3)
    source = {f"blocks.11.{k}": torch.randn_like(v) for k, v in deit.block.state_dict().items()}
    source.update({"cls_token": torch.randn(1, 1, 768), "norm.weight": torch.randn(768), "norm.bias": torch.randn(768)})
    deit.load_deit(source, "synthetic")
    assert torch.equal(deit.block.attn.qkv.weight, source["blocks.11.attn.qkv.weight"]) and torch.equal(
        deit.cls_token, source["cls_token"]
    )
    with pytest.raises(WeightsError, match="not a DeiT"):
        deit.load_deit({"x": torch.zeros(1)}, "bad.pth")

"""Families on timm's token models (MAE, AIMv2, DINOv3) and the one timm checkpoint filter."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _backbones_helpers import _random_sd, _run, _save

from fmprobe.backbones import (
    create_backbone,
    get_spec,
)


def test_mae_full_checkpoint_drops_decoder(tmp_path: Path) -> None:
    with torch.device("meta"):
        shapes = {k[len("model."):]: tuple(v.shape) for k, v in get_spec("mae_vitb16").build(224).state_dict().items()}
    encoder = _random_sd(shapes)  # MAE's encoder keys are timm's
    sd = {"model": {**encoder, "decoder_embed.weight": torch.zeros(512, 768), "mask_token": torch.zeros(1, 1, 512),
                    "decoder_blocks.0.norm1.weight": torch.zeros(512)}}  # a full (visualisation) checkpoint  # fmt: skip
    loaded = create_backbone("mae_vitb16", weights=_save(tmp_path, "mae_visualize_vit_base.pth", sd)).model.model.state_dict()
    assert loaded.keys() == encoder.keys() and all(torch.equal(loaded[k], encoder[k]) for k in encoder)


@pytest.mark.parametrize("name", ["aimv2_vitl14", "dinov3_vits16"])
def test_timm_families_round_trip_their_layout(tmp_path: Path, name: str) -> None:
    spec = get_spec(name)
    with torch.device("meta"):
        keys = set(spec.build(224).state_dict())
    assert all(k.startswith("model.") for k in keys)
    if name == "dinov3_vits16":  # small: a real round trip through a file in timm's layout, with its classifier
        with torch.device("meta"):
            shapes = {k[len("model."):]: tuple(v.shape) for k, v in spec.build(64).state_dict().items()}
        sd = _random_sd(shapes)
        loaded = create_backbone(name, weights=_save(tmp_path, "model.safetensors", {**sd, "head.weight": torch.zeros(10, 384)}), resolution=64)
        own = loaded.model.model.state_dict()
        assert all(torch.equal(own[k], v) for k, v in sd.items())
        assert torch.isfinite(_run(loaded.model, torch.randn(1, 3, 64, 64), ("cls",))["cls"]).all()

"""SAM 2: the release layout maps onto timm's Hiera trunk."""

from __future__ import annotations

import torch

from fmprobe.backbones import (
    sam2,
)


def test_sam2_release_layout_maps_to_the_trunk() -> None:
    model = sam2.build_model("sam2_hiera_tiny", 64)
    own = {k[len("trunk."):]: v for k, v in model.state_dict().items()}
    release = {"image_encoder.trunk." + k.replace("mlp.fc1", "mlp.layers.0").replace("mlp.fc2", "mlp.layers.1"): v for k, v in own.items()}
    release.update({"image_encoder.neck.convs.0.conv.weight": torch.zeros(1), "sam_mask_decoder.iou_token.weight": torch.zeros(1)})
    assert "image_encoder.trunk.blocks.0.mlp.layers.0.weight" in release
    model.load_state_dict(sam2.filter_state_dict(release, model), strict=True)
    timm_layout = {**own, "head.norm.weight": torch.zeros(768)}
    model.load_state_dict(sam2.filter_state_dict(timm_layout, model), strict=True)

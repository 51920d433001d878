"""Weights: named errors for missing, unsafe and mismatching files."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from _backbones_helpers import _save, release_dinov2

from fmprobe.backbones import (
    create_backbone,
    resolve_weights,
)
from fmprobe.errors import WeightsError


@pytest.mark.parametrize(
    "name,expected",
    [
        ("dinov2_vitb14", r"dinov2_vitb14_pretrain\.pth from https://dl\.fbaipublicfiles\.com/dinov2/dinov2_vitb14/"),
        ("dinov2_vitl14_reg", r"dinov2_vitl14_reg4_pretrain\.pth .*facebook/dinov2-with-registers-large"),
        ("sam_vitb", r"sam_vit_b_01ec64\.pth from https://dl\.fbaipublicfiles\.com/segment_anything/"),
        ("seem_focalt", r"seem_focalt_v0\.pt from https://huggingface\.co/xdecoder/SEEM"),
        ("blip_vitb16", r"model_base\.pth from https://storage\.googleapis\.com/sfr-vision-language-research/BLIP/models/"),
        ("openclip_vitb16_laion2b", r"open_clip_model\.safetensors from https://huggingface\.co/laion/CLIP-ViT-B-16-laion2B-s34B-b88K"),
        ("biomedclip", r"microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"),
        ("rad_dino", r"model\.safetensors from https://huggingface\.co/microsoft/rad-dino"),
        ("mae_vitb16", r"mae_pretrain_vit_base\.pth"),
        ("sam2_hiera_t", r"sam2_hiera_tiny\.pt"),
        ("aimv2_vitl14", r"apple/aimv2-large-patch14-224"),
        ("dinov3_vitb16", r"timm/vit_base_patch16_dinov3\.lvd1689m"),
    ],
)
def test_missing_weights_name_the_file_and_the_flag(name: str, expected: str) -> None:
    with pytest.raises(WeightsError, match=expected) as info:
        resolve_weights(name)
    message = str(info.value)
    assert f"no weights for {name!r}" in message and "HF_HUB_OFFLINE=1" in message and "--weights PATH" in message
    assert f"{name}:random" in message


class _Config:  # an arbitrary Python object: unpickling it would run code
    pass


def test_unsafe_and_mismatching_checkpoints_are_refused(tmp_path: Path) -> None:
    unsafe = tmp_path / "dinov2_vits14_pretrain.pth"
    torch.save({"model": {"cls_token": torch.zeros(1)}, "args": _Config()}, unsafe, pickle_protocol=pickle.DEFAULT_PROTOCOL)
    with pytest.raises(WeightsError, match="refused: this checkpoint needs arbitrary Python objects"):
        create_backbone("dinov2_vits14", weights=unsafe)
    tiny = _save(tmp_path, "t.pth", release_dinov2(192, 12))
    with pytest.raises(WeightsError, match=r"shape mismatches \(first: model\.cls_token: checkpoint \(1, 1, 192\) vs model \(1, 1, 384\)"):
        create_backbone("dinov2_vits14", weights=tiny, resolution=56)
    with pytest.raises(WeightsError, match=r"unexpected keys \(first: model\.blocks\.12\."):
        create_backbone("dinov2_vits14", weights=_save(tmp_path, "deep.pth", release_dinov2(384, 13)), resolution=56)
    with pytest.raises(WeightsError, match="not found"):
        create_backbone("sam_vitb", weights=tmp_path / "absent.pth")

"""Preprocessing constants: the published ones of each project, and SAM's pipeline pixel for pixel."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from fmprobe.backbones import (
    BACKBONES,
    get_spec,
    openclip,
)
from fmprobe.backbones.base import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD
from fmprobe.backbones.preprocess import ImageTransform


def test_preprocessing_matches_each_project() -> None:
    from open_clip import pretrained

    p = {name: get_spec(name).preprocess for name in BACKBONES}
    # DINOv2 make_classification_eval_transform: Resize(256) + CenterCrop(224), bicubic, ImageNet stats
    for name in ("dinov2_vits14", "dinov2_vitg14_reg", "dinov3_vitb16", "mae_vitb16"):
        assert (p[name].size, round(p[name].size / p[name].crop_pct), p[name].interpolation) == (224, 256, "bicubic")
        assert (p[name].mean, p[name].std, p[name].resize_mode) == (IMAGENET_MEAN, IMAGENET_STD, "center_crop")
    # open_clip: the pretrained config of the exact weights
    for name, (model, tag) in {"openclip_vitb16_laion2b": ("ViT-B-16", "laion2b_s34b_b88k"),
                               "siglip_vitb16": ("ViT-B-16-SigLIP", "webli"), "siglip2_vitb16": ("ViT-B-16-SigLIP2", "webli")}.items():  # fmt: skip
        cfg = pretrained.get_pretrained_cfg(model, tag)
        mode = {"shortest": "center_crop", "squash": "squash"}[cfg["resize_mode"]]
        assert (p[name].mean, p[name].std, p[name].interpolation, p[name].resize_mode) == (cfg["mean"], cfg["std"], cfg["interpolation"], mode)
        assert p[name].size == openclip.model_config(model)["vision_cfg"]["image_size"] == 224 and p[name].crop_pct == 1.0
        assert get_spec(name).weights.hub_id == cfg["hf_hub"].rstrip("/")
    assert (p["biomedclip"].mean, p["biomedclip"].std, p["biomedclip"].size) == (CLIP_MEAN, CLIP_STD, 224)
    # SAM: pixel_mean/std on 0-255 (segment-anything's Sam defaults), longest side 1024, bilinear (torchvision default)
    import inspect

    from segment_anything.modeling import Sam

    defaults = inspect.signature(Sam.__init__).parameters
    assert np.allclose(np.array(p["sam_vitb"].mean) * 255, defaults["pixel_mean"].default)
    assert np.allclose(np.array(p["sam_vitb"].std) * 255, defaults["pixel_std"].default)
    assert (p["sam_vith"].size, p["sam_vith"].resize_mode, p["sam_vith"].interpolation) == (1024, "longest_pad", "bilinear")
    # SEEM: PIXEL_MEAN [123.675, 116.280, 103.530] / PIXEL_STD [58.395, 57.120, 57.375]; demo resize 512 bicubic
    assert np.allclose(np.array(p["seem_focalt"].mean) * 255, [123.675, 116.280, 103.530])
    assert np.allclose(np.array(p["seem_focall"].std) * 255, [58.395, 57.120, 57.375])
    assert (p["seem_focalt"].size, p["seem_focalt"].interpolation) == (512, "bicubic")
    # BLIP transform_test: Resize((224, 224), BICUBIC), CLIP stats
    assert (p["blip_vitb16"].size, p["blip_vitb16"].resize_mode, p["blip_vitb16"].interpolation) == (224, "squash", "bicubic")
    assert (p["blip_vitb16"].mean, p["blip_vitb16"].std) == (CLIP_MEAN, CLIP_STD)
    # RAD-DINO preprocessor_config.json; SAM 2 squash 1024; AIMv2 as timm's config of the apple weights
    assert (p["rad_dino"].size, p["rad_dino"].crop_pct, p["rad_dino"].mean, p["rad_dino"].std) == (518, 1.0, (0.5307,) * 3, (0.2583,) * 3)
    assert (p["sam2_hiera_l"].size, p["sam2_hiera_l"].resize_mode, p["sam2_hiera_l"].mean) == (1024, "squash", IMAGENET_MEAN)
    import timm

    aim = timm.get_pretrained_cfg("aimv2_large_patch14_224.apple_pt")
    assert (p["aimv2_vitl14"].mean, p["aimv2_vitl14"].std, p["aimv2_vitl14"].crop_pct) == (aim.mean, aim.std, aim.crop_pct)


def test_sam_transform_equals_segment_anythings_pipeline() -> None:
    """ResizeLongestSide(1024) + (x - pixel_mean) / pixel_std + bottom/right zero pad, on a non-square image."""
    from segment_anything.utils.transforms import ResizeLongestSide

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (300, 500, 3), dtype=np.uint8)  # 1024 * 300 / 500 = 614.4: no rounding tie
    ours = ImageTransform(get_spec("sam_vitb").preprocess)(Image.fromarray(image))
    resized = torch.from_numpy(ResizeLongestSide(1024).apply_image(image)).permute(2, 0, 1).float()
    mean = torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375]).view(3, 1, 1)
    theirs = F.pad((resized - mean) / std, (0, 1024 - resized.shape[2], 0, 1024 - resized.shape[1]))
    assert ours.shape == theirs.shape == (3, 1024, 1024)
    assert (ours - theirs).abs().max() < 1e-4

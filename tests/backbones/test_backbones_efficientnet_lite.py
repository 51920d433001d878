"""EfficientNet-Lite0: real ImageNet weights from a pip package, parity with the reference implementation, its
checkpoint filter, published preprocessing and the random-init control."""

from __future__ import annotations

import pytest
import torch

from fmprobe.backbones import create_backbone, get_spec
from fmprobe.backbones.efficientnet_lite import filter_state_dict, locate_package_weights
from fmprobe.errors import WeightsError


@pytest.fixture(scope="module")
def lite0() -> torch.nn.Module:
    return create_backbone("efficientnet_lite0_imagenet")


def test_lite0_real_weights_match_the_reference_implementation(lite0) -> None:
    reference_module = pytest.importorskip("efficientnet_lite_pytorch", reason="test extra efficientnet-lite-pytorch")
    reference = reference_module.EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=str(locate_package_weights())
    ).eval()
    torch.manual_seed(0)
    images = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        ours = lite0.model(images, ("pooled",))["pooled"]
        theirs = reference._avg_pooling(reference.extract_features(images)).flatten(1)
        logits_ref = reference(images)
        logits_ours = torch.nn.functional.linear(ours, reference._fc.weight, reference._fc.bias)
    assert ours.shape == (2, 1280)
    assert torch.allclose(ours, theirs, atol=1e-5), (ours - theirs).abs().max()
    assert torch.allclose(logits_ours, logits_ref, atol=1e-4)


def test_lite0_filter_maps_every_key_and_loads_strictly() -> None:
    synthetic = {"_conv_stem.weight": torch.zeros(1), "_blocks.0._depthwise_conv.weight": torch.zeros(1),
                 "_blocks.1._expand_conv.weight": torch.zeros(1), "_blocks.15._bn2.bias": torch.zeros(1),
                 "_bn1.running_var": torch.zeros(1), "_fc.weight": torch.zeros(1)}  # fmt: skip
    mapped = filter_state_dict(synthetic)
    assert set(mapped) == {"model.conv_stem.weight", "model.blocks.0.0.conv_dw.weight", "model.blocks.1.0.conv_pw.weight",
                           "model.blocks.6.0.bn3.bias", "model.bn2.running_var"}  # fmt: skip
    with pytest.raises(WeightsError, match="unexpected EfficientNet-Lite0 key"):
        filter_state_dict({"_blocks.3._se_reduce.weight": torch.zeros(1)})


def test_lite0_preprocessing_is_the_published_one() -> None:
    p = get_spec("efficientnet_lite0_imagenet").preprocess
    assert (p.size, p.crop_pct, p.interpolation, p.mean, p.std) == (224, 0.875, "bicubic", (0.5,) * 3, (0.5,) * 3)
    import timm

    deit = get_spec("deit_base_imagenet").preprocess  # follows timm's pretrained config of that exact tag
    cfg = timm.get_pretrained_cfg("deit_base_patch16_224.fb_in1k")
    assert (deit.crop_pct, deit.interpolation, deit.mean, deit.std) == (cfg.crop_pct, "bicubic", cfg.mean, cfg.std)
    assert get_spec("resnet50_imagenet").preprocess.interpolation == "bilinear"


def test_random_control_is_reproducible_and_differs_from_pretrained(lite0) -> None:
    a, b = create_backbone("efficientnet_lite0_imagenet:random"), create_backbone("efficientnet_lite0_imagenet:random")
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        out_a, out_b, out_p = (m.model(x, ("pooled",))["pooled"] for m in (a, b, lite0))
    assert torch.equal(out_a, out_b) and not torch.allclose(out_a, out_p)
    assert a.weights_digest.startswith("random-init") and lite0.weights_digest.startswith("sha256:")

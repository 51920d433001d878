"""Families on timm's token models (MAE, AIMv2, DINOv3) and the one timm checkpoint filter."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _backbones_helpers import _random_sd, _run, _save

from fmprobe.backbones import create_backbone, get_spec
from fmprobe.backbones.timm_features import build_timm_tokens


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


def test_timm_checkpoint_filter_unit() -> None:
    """Synthetic timm-layout dict: the classifier (per the network's pretrained config) and the named
    pre-training entries are left out, everything else goes under ``model.`` untouched."""
    from fmprobe.backbones.timm_features import timm_checkpoint_filter
    from fmprobe.backbones.timm_models import create_timm, timm_features

    cnn = timm_features(create_timm("test_resnet"), token_model=False)  # classifier 'fc'
    own = {k.removeprefix("model."): v for k, v in cnn.state_dict().items()}
    out = timm_checkpoint_filter({**own, "fc.weight": torch.zeros(10, 8), "fc.bias": torch.zeros(10)}, cnn)
    assert out.keys() == cnn.state_dict().keys() and all(torch.equal(out[f"model.{k}"], v) for k, v in own.items())
    vit = build_timm_tokens("vit_base_patch16_224", 32, depth=1, embed_dim=64, num_heads=2)  # classifier 'head'
    own = {k.removeprefix("model."): v for k, v in vit.state_dict().items()}
    extra = {"head.weight": torch.zeros(10, 64), "decoder_embed.weight": torch.zeros(1), "mask_token": torch.zeros(1, 1, 64)}
    out = timm_checkpoint_filter({**own, **extra}, vit, drop=("decoder", "mask_token"))
    assert out.keys() == vit.state_dict().keys()
    assert set(timm_checkpoint_filter({**own, "stray.weight": torch.zeros(1)}, vit)) - set(vit.state_dict()) == {"model.stray.weight"}


def test_cnn_and_token_readouts_of_the_one_timm_adapter() -> None:
    from fmprobe.backbones.timm_models import create_timm, timm_features

    torch.manual_seed(0)
    cnn = timm_features(create_timm("test_resnet"), token_model=False).eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        pooled = cnn(images, ("pooled",))["pooled"]
        assert torch.equal(pooled, cnn.model.forward_head(cnn.model.forward_features(images), pre_logits=True))
    assert cnn.channels_last and cnn.readouts == ("pooled",)
    vit = timm_features(create_timm("test_vit", 32), token_model=True).eval()
    with torch.inference_mode():
        out = vit(torch.randn(2, 3, 32, 32), ("cls", "mean_patch", "cls_mean"))
    assert torch.equal(out["cls_mean"], torch.cat([out["cls"], out["mean_patch"]], dim=-1)) and not vit.channels_last

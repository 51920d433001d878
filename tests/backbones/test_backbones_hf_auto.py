"""The hf: escape: any saved transformers vision model (or the image tower of a CLIP) builds and matches."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _backbones_helpers import ATOL, _run, _save, _tiny_hf_dinov2, release_dinov2, release_to_hf

from fmprobe.backbones import (
    create_backbone,
    get_spec,
)
from fmprobe.backbones.base import CLIP_MEAN, CLIP_STD
from fmprobe.errors import WeightsError


def test_hf_escape_builds_from_a_saved_transformers_model(tmp_path: Path) -> None:
    import transformers as T

    release = release_dinov2(64, 2, grid=4)
    _tiny_hf_dinov2(tmp_path / "tiny", release)
    name = f"hf:{tmp_path / 'tiny'}"
    spec = get_spec(name)
    p = spec.preprocess
    assert (p.size, p.crop_pct, p.mean, p.interpolation) == (56, 56 / 64, (0.5307,) * 3, "bicubic")
    assert spec.readouts == ("pooled", "cls", "mean_patch") and spec.default_readout == "pooled"
    loaded = create_backbone(name)
    images = torch.randn(2, 3, 56, 56)
    out = _run(loaded.model, images, spec.readouts)
    ref = T.Dinov2Model.from_pretrained(str(tmp_path / "tiny")).eval()
    with torch.inference_mode():
        expected = ref(pixel_values=images)
    assert (out["pooled"] - expected.pooler_output).abs().max() < ATOL
    assert (out["mean_patch"] - expected.last_hidden_state[:, 1:].mean(1)).abs().max() < ATOL
    assert create_backbone(name + ":random").random_init
    # a checkpoint missing a weight is refused, naming it
    broken = release_to_hf(release, 2)
    broken.pop("encoder.layer.1.norm2.weight")
    with pytest.raises(WeightsError, match="missing keys .*layer.1.norm2.weight"):
        create_backbone(name, weights=_save(tmp_path, "broken.safetensors", broken))
    with pytest.raises(WeightsError, match="cannot read config.json .*HF_HUB_OFFLINE"):
        get_spec("hf:someone/not-cached-model")


def test_hf_escape_takes_the_image_tower_of_clip(tmp_path: Path) -> None:
    import json

    import transformers as T

    cfg = T.CLIPConfig(vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                                      "image_size": 32, "patch_size": 16},
                       text_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}, projection_dim=8)  # fmt: skip
    full = T.CLIPModel(cfg).eval()
    full.save_pretrained(tmp_path / "clip")
    (tmp_path / "clip" / "preprocessor_config.json").write_text(json.dumps({"size": {"shortest_edge": 32}, "crop_size": 32, "do_center_crop": True,
                                                                             "image_mean": list(CLIP_MEAN), "image_std": list(CLIP_STD), "resample": 3}))  # fmt: skip
    loaded = create_backbone(f"hf:{tmp_path / 'clip'}")
    assert loaded.spec.default_readout == "embedding" and "CLIPVisionModelWithProjection" in loaded.spec.implementation
    images = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        expected = full.get_image_features(pixel_values=images)
    expected = getattr(expected, "pooler_output", expected)
    assert (_run(loaded.model, images, ("embedding",))["embedding"] - expected).abs().max() < ATOL

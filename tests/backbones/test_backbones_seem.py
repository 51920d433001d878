"""SEEM: its published FocalNet layout loads strictly; the plain flavour matches timm's FocalNet."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _backbones_helpers import ATOL, _random_sd, _run, _save

from fmprobe.backbones import (
    create_backbone,
    seem,
)
from fmprobe.errors import WeightsError


def seem_backbone_shapes(cfg: seem.FocalConfig) -> dict[str, tuple[int, ...]]:
    """The ``backbone.*`` entries of a SEEM checkpoint, written out from SEEM's modeling/vision/backbone/focal(_dw).py."""
    c = cfg.embed_dim
    shapes = {"backbone.patch_embed.proj.weight": (c, 3, 7, 7), "backbone.patch_embed.proj.bias": (c,),
              "backbone.patch_embed.norm.weight": (c,), "backbone.patch_embed.norm.bias": (c,)}  # fmt: skip
    for i, depth in enumerate(cfg.depths):
        d, level = c * 2**i, cfg.focal_levels[i]
        for j in range(depth):
            b = f"backbone.layers.{i}.blocks.{j}."
            if cfg.depthwise:
                shapes.update({b + "dw1.weight": (d, 1, 3, 3), b + "dw1.bias": (d,), b + "dw2.weight": (d, 1, 3, 3), b + "dw2.bias": (d,)})
            shapes.update({b + "norm1.weight": (d,), b + "norm1.bias": (d,), b + "norm2.weight": (d,), b + "norm2.bias": (d,),
                           b + "modulation.f.weight": (2 * d + level + 1, d), b + "modulation.f.bias": (2 * d + level + 1,),
                           b + "modulation.h.weight": (d, d, 1, 1), b + "modulation.h.bias": (d,),
                           b + "modulation.proj.weight": (d, d), b + "modulation.proj.bias": (d,),
                           b + "mlp.fc1.weight": (4 * d, d), b + "mlp.fc1.bias": (4 * d,), b + "mlp.fc2.weight": (d, 4 * d),
                           b + "mlp.fc2.bias": (d,), b + "gamma_1": (d,), b + "gamma_2": (d,)})  # fmt: skip
            for k in range(level):
                shapes[b + f"modulation.focal_layers.{k}.0.weight"] = (d, 1, 3 + 2 * k, 3 + 2 * k)
        if i < len(cfg.depths) - 1:
            shapes.update({f"backbone.layers.{i}.downsample.proj.weight": (2 * d, d, 3, 3), f"backbone.layers.{i}.downsample.proj.bias": (2 * d,),
                           f"backbone.layers.{i}.downsample.norm.weight": (2 * d,), f"backbone.layers.{i}.downsample.norm.bias": (2 * d,)})  # fmt: skip
        shapes.update({f"backbone.norm{i}.weight": (d,), f"backbone.norm{i}.bias": (d,)})
    return shapes


@pytest.mark.parametrize("name,cfg", [("seem_focalt", seem.FOCAL_T), ("seem_focall", seem.FOCAL_L)])
def test_seem_published_layout_loads_strictly(tmp_path: Path, name: str, cfg: seem.FocalConfig) -> None:
    expected = seem_backbone_shapes(cfg)
    with torch.device("meta"):
        own = {k: tuple(v.shape) for k, v in seem.SeemFeatures(cfg).state_dict().items()}
    assert own == expected
    if name == "seem_focalt":  # a whole SEEM checkpoint: backbone + the parts that are not the image encoder
        sd = _random_sd(expected)
        sd.update({"sem_seg_head.predictor.query_embed.weight": torch.zeros(101, 512), "backbone_proj": torch.zeros(768, 512)})
        loaded = create_backbone(name, weights=_save(tmp_path, "seem_focalt_v0.pt", sd), resolution=96)
        maps = loaded.model.backbone(torch.randn(1, 3, 96, 96))
        assert {k: (v.shape[-1], 96 // v.shape[1]) for k, v in maps.items()} == {
            "res2": (96, 4), "res3": (192, 8), "res4": (384, 16), "res5": (768, 32)}  # width, stride
        assert torch.equal(loaded.model.backbone.norm3.weight, sd["backbone.norm3.weight"])
        out = _run(loaded.model, torch.randn(2, 3, 96, 96), ("res5", "res3"))
        assert out["res5"].shape == (2, 768) and out["res3"].shape == (2, 192)
        sd.pop("backbone.layers.2.blocks.5.dw2.weight")
        with pytest.raises(WeightsError, match="1 missing keys .*layers.2.blocks.5.dw2.weight"):
            create_backbone(name, weights=_save(tmp_path, "broken.pt", sd))


def test_seem_focal_flavour_matches_timm_focalnet() -> None:
    """SEEM's plain 'focal' block (Focal-L's) against timm's FocalNet with the same options (smaller depth/width)."""
    from timm.models.focalnet import FocalNet, checkpoint_filter_fn

    cfg = seem.FocalConfig(embed_dim=64, depths=(1, 1, 2, 1), focal_levels=(4, 4, 4, 4), depthwise=False)
    sd = _random_sd(seem_backbone_shapes(cfg), seed=3)
    ours = seem.SeemFeatures(cfg)
    ours.load_state_dict(seem.filter_state_dict(sd), strict=True)
    reference = FocalNet(num_classes=0, embed_dim=64, depths=(1, 1, 2, 1), focal_levels=(4, 4, 4, 4), focal_windows=(3, 3, 3, 3),
                         use_overlap_down=True, use_post_norm=True, normalize_modulator=True, layerscale_value=1e-4)  # fmt: skip
    bare = {k[len("backbone."):]: v for k, v in sd.items() if not k.startswith(("backbone.norm0", "backbone.norm1", "backbone.norm2"))}
    bare = {("norm." + k[len("norm3."):] if k.startswith("norm3.") else k): v for k, v in bare.items()}
    reference.load_state_dict(checkpoint_filter_fn(bare, reference), strict=True)
    images = torch.randn(2, 3, 128, 128)
    with torch.inference_mode():
        ref = reference.eval().forward_features(images).mean((2, 3))
    assert (_run(ours.eval(), images, ("res5",))["res5"] - ref).abs().max() < ATOL


def test_seem_filter_unit() -> None:
    assert set(seem.filter_state_dict({"backbone.a": torch.zeros(1), "sem_seg_head.b": torch.zeros(1)})) == {"backbone.a"}
    assert set(seem.filter_state_dict({"patch_embed.proj.weight": torch.zeros(1)})) == {"backbone.patch_embed.proj.weight"}
    with pytest.raises(WeightsError, match="no 'backbone.\\*' entries"):
        seem.filter_state_dict({"model.x": torch.zeros(1)})

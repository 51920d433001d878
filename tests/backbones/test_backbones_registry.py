"""The registry: every family and variant builds with its readouts; names, modifiers and escapes resolve;
extraction runs end to end offline, one variant per family."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _backbones_helpers import _run, _tiny_hf_dinov2, release_dinov2

from fmprobe.backbones import (
    BACKBONES,
    create_backbone,
    describe_shapes,
    get_spec,
    parse_name,
)
from fmprobe.errors import UnknownNameError

FAMILIES = ("dinov2", "openclip", "sam", "seem", "blip", "rad_dino", "mae", "sam2", "aimv2", "dinov3")


SMALL_RES = {"dinov2": 56, "rad_dino": 56, "aimv2": 56, "sam": 64, "seem": 64, "sam2": 64}


@pytest.mark.parametrize("name", [n for n, s in BACKBONES.items() if s.family in FAMILIES or s.family == "openclip"])
def test_every_variant_builds_with_its_readouts(name: str) -> None:
    spec = get_spec(name)
    assert spec.default_readout in spec.readouts and spec.implementation and spec.weights.filename
    dims, params = describe_shapes(spec)  # meta device: shapes only, fast for ViT-g and SAM-H too
    assert set(dims) == set(spec.readouts) and all(d > 0 for d in dims.values()) and params > 1
    size = SMALL_RES.get(spec.family, 64)  # and at a reduced resolution
    with torch.device("meta"):
        out = spec.build(size).forward_readouts(torch.empty(2, 3, size, size), spec.readouts)
    assert {k: tuple(v.shape) for k, v in out.items()} == {k: (2, d) for k, d in dims.items()}


@pytest.mark.parametrize("name,size", [("siglip2_vitb16", 64), ("sam2_hiera_t", 64), ("dinov2_vits14_reg", 56)])
def test_small_variants_run_for_real(name: str, size: int) -> None:
    """A real forward (random weights) for variants that no parity or extraction test below runs."""
    spec = get_spec(name)
    out = _run(create_backbone(name + ":random", resolution=size).model, torch.randn(2, 3, size, size), spec.readouts)
    assert all(torch.isfinite(v).all() and v.shape[0] == 2 for v in out.values())
    assert (out[spec.default_readout][0] - out[spec.default_readout][1]).abs().max() > 0


def test_expected_widths_of_the_study_variants() -> None:
    widths = {
        "dinov2_vits14": ("cls", 384), "dinov2_vitg14_reg": ("cls", 1536), "openclip_vitb16_laion2b": ("embedding", 512),
        "sam_vitb": ("encoder_mean", 768), "sam_vith": ("encoder_mean", 1280), "seem_focalt": ("res5", 768),
        "seem_focall": ("res5", 1536), "blip_vitb16": ("cls", 768), "biomedclip": ("embedding", 512),
        "sam2_hiera_t": ("trunk_mean", 768), "aimv2_vitl14": ("mean_patch", 1024),
    }  # fmt: skip
    for name, (readout, width) in widths.items():
        spec = get_spec(name)
        assert spec.default_readout == readout, name
        assert describe_shapes(spec)[0][readout] == width, name
    assert describe_shapes(get_spec("sam_vitb"))[0]["neck_mean"] == 256


def test_random_modifier_and_generic_prefixes_parse() -> None:
    assert parse_name("dinov2_vitb14:random") == ("dinov2_vitb14", True)
    assert parse_name("openclip:ViT-B-32:openai") == ("openclip:ViT-B-32:openai", False)
    assert parse_name("openclip:ViT-B-32:openai:random") == ("openclip:ViT-B-32:openai", True)
    assert parse_name("openclip:hf-hub:org/repo") == ("openclip:hf-hub:org/repo", False)
    assert parse_name("hf:facebook/dinov2-small:random") == ("hf:facebook/dinov2-small", True)
    with pytest.raises(UnknownNameError, match="modifier 'laion2b'"):
        parse_name("dinov2_vitb14:laion2b")
    with pytest.raises(UnknownNameError, match="Closest: .*dinov2_vitb14"):
        get_spec("dinov2_vitb16")


@pytest.mark.parametrize(
    "backbone,resolution,readouts",
    [
        ("dinov2_vits14:random", 56, ("cls", "mean_patch", "block:5")),
        ("openclip:ViT-B-16:laion2b_s34b_b88k:random", 64, ("embedding", "pooled")),
        ("sam_vitb:random", 64, ("encoder_mean", "neck_mean")),
        ("seem_focalt:random", 64, ("res5",)),
        ("blip_vitb16:random", 64, ("cls",)),
        ("rad_dino:random", 56, ("cls",)),
        ("mae_vitb16:random", 64, ("cls",)),
        ("sam2_hiera_t:random", 64, ("trunk_mean",)),
        ("aimv2_vitl14:random", 56, ("mean_patch",)),
        ("dinov3_vits16:random", 64, ("cls", "mean_patch")),
        ("hf:TINY", 56, ("pooled",)),
    ],
)
def test_extract_end_to_end_offline(tmp_path: Path, backbone: str, resolution: int, readouts: tuple[str, ...]) -> None:
    import fmprobe.extract as extract_module
    from fmprobe.store import FeatureFile

    if backbone == "hf:TINY":  # the hf: escape, with real (random) weights saved as a transformers model
        _tiny_hf_dinov2(tmp_path / "tiny", release_dinov2(64, 2, grid=4))
        backbone = f"hf:{tmp_path / 'tiny'}"

    run = getattr(extract_module, "extract_features", None) or extract_module.extract
    result = run("demo:10", backbone, out=tmp_path, max_images_per_split=2, resolution=resolution, readouts=readouts,
                 dtype="fp32", progress=False, num_workers=0)  # fp32: bf16 autocast is slow on some CPUs  # fmt: skip
    assert result.path.exists() and not result.cache_hit and result.n_images > 0
    features = FeatureFile(result.path)
    assert set(readouts) <= set(features.readouts)


def test_imagenet_baselines_are_a_registry_fact() -> None:
    from fmprobe.backbones import imagenet_baselines

    baselines = imagenet_baselines()
    assert set(baselines) == {"efficientnet_lite0_imagenet", "resnet50_imagenet", "resnet152_imagenet", "deit_base_imagenet", "dino_vitb16_imagenet"}
    assert all(get_spec(name).imagenet_baseline for name in baselines)
    assert not get_spec("dinov2_vitb14").imagenet_baseline and not get_spec("resnet50").imagenet_baseline  # nor any escape

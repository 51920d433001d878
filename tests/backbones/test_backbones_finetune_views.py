"""The fine-tuning views every family gives: ``tokens()`` (what the attention head reads) and ``block_groups()`` /
``group_matcher()`` (what ``partial:K`` unfreezes and layer decay scales), on one tiny random model per family.

Fine-tuning uses only these methods, never a family's internals, so each family is checked the same way: the
tokens are ``[B, N, D]`` and average to the family's patch-mean readout; the blocks cover every parameter exactly
once, there are at least two, and they run in forward order (seen through forward hooks)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from _backbones_helpers import _tiny_hf_dinov2, release_dinov2
from torch import nn

from fmprobe.backbones import FeatureModel, get_spec, openclip, sam, sam2, seem
from fmprobe.backbones.timm_features import build_timm_tokens
from fmprobe.backbones.timm_models import create_timm, timm_features

SMALL_VIT = {"depth": 2, "embed_dim": 64, "num_heads": 2}
OPENCLIP_VIT = {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16}}
OPENCLIP_TIMM = {"embed_dim": 32, "vision_cfg": {"timm_model_name": "test_vit", "timm_model_pretrained": False, "timm_pool": "",
                                                 "timm_proj": "linear", "image_size": 160}}  # fmt: skip


def _hf_clip(folder: Path) -> Path:
    import transformers as T

    cfg = T.CLIPConfig(vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                                      "image_size": 32, "patch_size": 16},
                       text_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2},
                       projection_dim=8)  # fmt: skip
    T.CLIPModel(cfg).save_pretrained(folder)
    return folder


# family -> (builder of a tiny random model given a scratch folder, input size, the readout that averages the tokens)
FAMILIES: dict[str, tuple[Callable[[Path], FeatureModel], int, str | None]] = {
    "timm_cnn": (lambda _: timm_features(create_timm("test_resnet"), token_model=False), 64, "pooled"),
    "timm_vit": (lambda _: timm_features(create_timm("test_vit", 32), token_model=True), 32, "mean_patch"),
    "efficientnet_lite": (lambda _: get_spec("efficientnet_lite0_imagenet").build(64), 64, "pooled"),
    "dinov2": (lambda _: build_timm_tokens("vit_small_patch14_reg4_dinov2", 28, **SMALL_VIT), 28, "mean_patch"),
    "mae": (lambda _: build_timm_tokens("vit_base_patch16_224", 32, **SMALL_VIT), 32, "mean_patch"),
    "blip": (lambda _: build_timm_tokens("vit_base_patch16_224", 32, **SMALL_VIT), 32, "mean_patch"),
    "dinov3": (lambda _: build_timm_tokens("vit_small_patch16_dinov3", 32, **SMALL_VIT), 32, "mean_patch"),
    "aimv2": (lambda _: build_timm_tokens("aimv2_large_patch14_224", 28, readouts=("mean_patch",), **SMALL_VIT), 28, "mean_patch"),
    "sam": (lambda _: sam.build_model("samvit_base_patch16", 64, depth=2, embed_dim=64, num_heads=2, global_attn_indexes=[1]), 64, "encoder_mean"),
    "sam2": (lambda _: sam2.build_model("sam2_hiera_tiny", 64), 64, "trunk_mean"),
    "seem": (lambda _: seem.build_model(seem.FocalConfig(embed_dim=16, depths=(1, 2, 1, 1)), 64), 64, "res5"),
    "openclip_vit": (lambda _: openclip.build_visual("tiny", OPENCLIP_VIT, False, 32, 32), 32, "mean_patch"),
    "openclip_timm": (lambda _: openclip.build_visual("tiny", OPENCLIP_TIMM, False, 160, 32), 32, "mean_patch"),
    "hf_dinov2": (lambda tmp: _hf(tmp, "dinov2"), 56, "mean_patch"),
    "hf_clip": (lambda tmp: _hf(tmp, "clip"), 32, "mean_patch"),
}  # fmt: skip


def _hf(tmp: Path, kind: str) -> FeatureModel:
    if kind == "dinov2":
        _tiny_hf_dinov2(tmp / "dinov2", release_dinov2(64, 2, grid=4))
    else:
        _hf_clip(tmp / "clip")
    spec = get_spec(f"hf:{tmp / kind}")
    return spec.build(spec.native_resolution)


def _first_calls(model: nn.Module, run: Callable[[], object]) -> dict[str, int]:
    """Parameter name -> the position of the first call of the module that owns it (forward order)."""
    order: dict[str, int] = {}
    owners = {name: module for name, module in model.named_modules() if any(True for _ in module.parameters(recurse=False))}

    def hook(name: str) -> Callable[..., None]:
        def record(*_: object) -> None:  # a pre-hook that returned a value would replace the module's input
            order.setdefault(name, len(order))

        return record

    handles = [module.register_forward_pre_hook(hook(name)) for name, module in owners.items()]
    try:
        run()
    finally:
        for handle in handles:
            handle.remove()
    return {f"{m}.{p}" if m else p: order[m] for m, module in owners.items() if m in order
            for p, _ in module.named_parameters(recurse=False)}  # fmt: skip


@pytest.mark.parametrize("family", FAMILIES)
def test_tokens_and_blocks_of_every_family(family: str, tmp_path: Path) -> None:
    build, size, readout = FAMILIES[family]
    torch.manual_seed(0)
    model = build(tmp_path).eval()
    images = torch.randn(2, 3, size, size)
    with torch.inference_mode():
        tokens = model.tokens(images)
        assert tokens.ndim == 3 and tokens.shape[0] == 2 and tokens.shape[1] > 1, tokens.shape
        if readout is not None:  # the tokens are the ones the family's patch-mean readout averages
            pooled = model.forward_readouts(images, (readout,))[readout]
            assert tokens.shape[2] == pooled.shape[1] and torch.allclose(tokens.mean(1), pooled, atol=1e-5)

    groups = model.block_groups()
    names = [n for n, _ in model.named_parameters()]
    grouped = [*groups.stem, *(n for block in groups.blocks for n in block), *groups.tail]
    assert sorted(grouped) == sorted(names), "every parameter exactly once"
    assert len(groups.blocks) >= 2 and all(groups.blocks)
    first = _first_calls(model, lambda: model.tokens(images))
    starts = [min(first.get(n, 10**9) for n in block) for block in groups.blocks]
    assert starts == sorted(starts) and len(set(starts)) == len(starts), f"blocks out of forward order: {starts}"
    if any(n in first for n in groups.stem):
        assert min(first[n] for n in groups.stem if n in first) < starts[0]

    from timm.optim import param_groups_layer_decay

    decayed = param_groups_layer_decay(model, weight_decay=0.05, layer_decay=0.75)  # what fine-tuning's layer decay calls
    assert sum(len(g["params"]) for g in decayed) == len(names)
    assert len({g["lr_scale"] for g in decayed}) >= 3  # stem, blocks and tail get different learning rates

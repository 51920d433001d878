"""DINOv2 and RAD-DINO: torch.hub release and transformers layouts -> timm, parity with transformers' Dinov2Model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from _backbones_helpers import ATOL, _run, _save, release_dinov2, release_to_hf

from fmprobe.backbones import (
    create_backbone,
    dinov2,
)
from fmprobe.errors import FmprobeError, WeightsError


def hub_interpolation(pos: torch.Tensor, grid: int, prefix: int = 1) -> torch.Tensor:
    """Reference: the DINOv2 hub model's on-the-fly resampling (bicubic, scale factor (grid + 0.1) / 37)."""
    m = int((pos.shape[1] - prefix) ** 0.5)
    patch = pos[:, prefix:].reshape(1, m, m, -1).permute(0, 3, 1, 2)
    patch = F.interpolate(patch, scale_factor=((grid + 0.1) / m, (grid + 0.1) / m), mode="bicubic", antialias=False)
    return torch.cat([pos[:, :prefix], patch.permute(0, 2, 3, 1).reshape(1, grid * grid, -1)], dim=1)


def _hf_dinov2(hf_sd: dict[str, torch.Tensor], dim: int, depth: int, heads: int, size: int, registers: int = 0, swiglu: bool = False):
    import transformers as T

    if registers:
        cfg = T.Dinov2WithRegistersConfig(hidden_size=dim, num_hidden_layers=depth, num_attention_heads=heads, image_size=size,
                                          patch_size=14, num_register_tokens=registers, layerscale_value=1.0)  # fmt: skip
        cls = T.Dinov2WithRegistersModel
    else:
        cfg = T.Dinov2Config(hidden_size=dim, num_hidden_layers=depth, num_attention_heads=heads, image_size=size,
                             patch_size=14, use_swiglu_ffn=swiglu, layerscale_value=1.0)  # fmt: skip
        cls = T.Dinov2Model
    model, info = cls.from_pretrained(None, config=cfg, state_dict=hf_sd, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    return model.eval()


@pytest.mark.parametrize("registers", [0, 4])
def test_dinov2_release_checkpoint_matches_transformers(tmp_path: Path, registers: int) -> None:
    dim, depth, heads, size = 384, 12, 6, 224  # the real ViT-S/14 configuration
    release = release_dinov2(dim, depth, registers=registers)
    name = "dinov2_vits14" + ("_reg" if registers else "")
    path = _save(tmp_path, dinov2.release_file("s", bool(registers)), release)
    ours = create_backbone(name, weights=path, resolution=size)
    assert ours.weights_digest.startswith("sha256:")
    hf_sd = release_to_hf(release, depth)
    hf_sd["embeddings.position_embeddings"] = hub_interpolation(release["pos_embed"], size // 14)
    theirs = _hf_dinov2(hf_sd, dim, depth, heads, size, registers)
    images = torch.randn(2, 3, size, size)
    out = _run(ours.model, images, ("cls", "mean_patch", "cls_mean", "block:11", "block:3"))
    with torch.inference_mode():
        ref = theirs(pixel_values=images, output_hidden_states=True)
    tokens = ref.last_hidden_state
    assert (out["cls"] - ref.pooler_output).abs().max() < ATOL
    assert (out["mean_patch"] - tokens[:, 1 + registers :].mean(1)).abs().max() < ATOL
    assert torch.equal(out["cls_mean"], torch.cat([out["cls"], out["mean_patch"]], -1))
    assert torch.allclose(out["block:11"], out["cls"], atol=1e-6)  # the last block, through the final norm
    with torch.inference_mode():
        block3 = theirs.layernorm(ref.hidden_states[4])[:, 0]
    assert (out["block:3"] - block3).abs().max() < ATOL
    # the same weights published in the transformers layout (facebook/dinov2-*) convert to the same tensors
    from_release = dinov2.filter_state_dict(release, ours.model)
    from_hf = dinov2.filter_state_dict(release_to_hf(release, depth), ours.model)
    assert from_release.keys() == from_hf.keys() and all(torch.equal(from_release[k], from_hf[k]) for k in from_release)
    with pytest.raises(FmprobeError, match="block:12 does not exist"):
        _run(ours.model, images, ("block:12",))


def test_dinov2_native_518_and_giant_swiglu_path(tmp_path: Path) -> None:
    # native size: no interpolation at all
    release = release_dinov2(384, 12)
    model = create_backbone("dinov2_vits14", weights=_save(tmp_path, "s.pth", release), resolution=518).model
    theirs = _hf_dinov2(release_to_hf(release, 12), 384, 12, 6, 518)
    images = torch.randn(1, 3, 518, 518)
    with torch.inference_mode():
        diff = (model(images, ("cls",))["cls"] - theirs(pixel_values=images).pooler_output).abs().max()
    assert diff < ATOL
    # ViT-g: SwiGLU (w12/w3 -> fc1/fc2), the same builder with 2 of its 40 blocks
    giant = release_dinov2(1536, 2, swiglu_hidden=4096)
    ours = dinov2.build_model("vit_giant_patch14_dinov2", 224, depth=2)
    ours.load_state_dict(dinov2.filter_state_dict(giant, ours), strict=True)
    hf_sd = release_to_hf(giant, 2)
    hf_sd["embeddings.position_embeddings"] = hub_interpolation(giant["pos_embed"], 16)
    ref = _hf_dinov2(hf_sd, 1536, 2, 24, 224, swiglu=True)
    images = torch.randn(1, 3, 224, 224)
    with torch.inference_mode():
        assert (ours.eval()(images, ("cls",))["cls"] - ref(pixel_values=images).pooler_output).abs().max() < ATOL


def test_dinov2_filter_unit() -> None:
    """Synthetic release dict: mask token dropped, registers folded, w12/w3 renamed, grid resampled."""
    sd = {"cls_token": torch.ones(1, 1, 4), "pos_embed": torch.arange(5 * 4.0).reshape(1, 5, 4), "mask_token": torch.zeros(1, 4),
          "register_tokens": torch.full((1, 4, 4), 7.0), "blocks.0.mlp.w12.weight": torch.zeros(8, 4), "blocks.0.mlp.w3.bias": torch.zeros(4)}  # fmt: skip

    class Grid(torch.nn.Module):
        patch_embed = type("P", (), {"grid_size": (2, 2)})()
        no_embed_class = True

    out = dinov2.filter_state_dict(sd, Grid())
    assert set(out) == {"model.cls_token", "model.pos_embed", "model.reg_token", "model.blocks.0.mlp.fc1.weight", "model.blocks.0.mlp.fc2.bias"}
    assert torch.equal(out["model.cls_token"], 1 + sd["pos_embed"][:, :1]) and out["model.pos_embed"].shape == (1, 4, 4)
    assert torch.equal(dinov2.resample_pos_embed(sd["pos_embed"], (2, 2), 1), sd["pos_embed"])  # identity at the native grid
    with pytest.raises(WeightsError, match="unexpected key"):
        dinov2.hf_to_release({"embeddings.cls_token": torch.zeros(1), "pooler.dense.weight": torch.zeros(1)})


def test_rad_dino_loads_its_transformers_checkpoint(tmp_path: Path) -> None:
    release = release_dinov2(768, 12, grid=37)
    path = _save(tmp_path, "model.safetensors", release_to_hf(release, 12))
    ours = create_backbone("rad_dino", weights=path, resolution=224)
    theirs = _hf_dinov2(release_to_hf(release, 12), 768, 12, 12, 518)  # transformers interpolates by size on the fly
    images = torch.randn(1, 3, 224, 224)
    with torch.inference_mode():
        ref = theirs(pixel_values=images).pooler_output
    assert (_run(ours.model, images, ("cls",))["cls"] - ref).abs().max() < ATOL

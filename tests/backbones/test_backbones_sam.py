"""SAM: segment-anything release -> timm samvit, parity with segment-anything's ImageEncoderViT."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch
from _backbones_helpers import ATOL, _run, _save

from fmprobe.backbones import (
    create_backbone,
    sam,
)


def _sa_encoder(img_size: int, seed: int = 0):
    from segment_anything.modeling import ImageEncoderViT

    torch.manual_seed(seed)
    encoder = ImageEncoderViT(img_size=img_size, patch_size=16, embed_dim=768, depth=12, num_heads=12, mlp_ratio=4, out_chans=256,
                              qkv_bias=True, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), use_rel_pos=True,
                              global_attn_indexes=[2, 5, 8, 11], window_size=14)  # sam_model_registry["vit_b"]  # fmt: skip
    with torch.no_grad():
        for name, p in encoder.named_parameters():  # rel-pos tables are zeros at init: randomise everything
            p.copy_(torch.randn_like(p) * 0.02 + (1.0 if "norm" in name and name.endswith("weight") else 0.0))
    return encoder.eval()


def _sa_checkpoint(encoder: torch.nn.Module) -> dict[str, torch.Tensor]:
    """sam_vit_b_01ec64.pth layout: image_encoder.* beside the prompt encoder and mask decoder."""
    sd = {f"image_encoder.{k}": v for k, v in encoder.state_dict().items()}
    sd.update({"prompt_encoder.pe_layer.positional_encoding_gaussian_matrix": torch.zeros(2, 128),
               "mask_decoder.iou_token.weight": torch.zeros(1, 256)})  # fmt: skip
    return sd


def test_sam_native_path_matches_segment_anything(tmp_path: Path) -> None:
    """At the checkpoint's own grid nothing is interpolated (ViT-B built for 256 px so that the test stays fast)."""
    encoder = _sa_encoder(256)
    path = _save(tmp_path, "sam_vit_b_256.pth", _sa_checkpoint(encoder))
    ours = create_backbone("sam_vitb", weights=path, resolution=256)
    own = ours.model.model.state_dict()
    assert torch.equal(own["pos_embed"], encoder.pos_embed) and torch.equal(own["blocks.2.attn.rel_pos_h"], encoder.blocks[2].attn.rel_pos_h)
    images = torch.randn(2, 3, 256, 256)
    out = _run(ours.model, images, ("encoder_mean", "neck_mean"))
    with torch.inference_mode():
        neck = encoder(images)
        tokens = encoder.patch_embed(images) + encoder.pos_embed
        for block in encoder.blocks:
            tokens = block(tokens)
    assert (out["neck_mean"] - neck.mean((2, 3))).abs().max() < ATOL
    assert (out["encoder_mean"] - tokens.mean((1, 2))).abs().max() < ATOL


def test_sam_reduced_resolution_interpolates_abs_and_rel_pos(tmp_path: Path) -> None:
    """A real-shape sam_vit_b checkpoint (64x64 grid, 127-row global rel-pos tables) used at 224 px."""
    encoder = _sa_encoder(1024)
    checkpoint = _sa_checkpoint(encoder)
    path = _save(tmp_path, "sam_vit_b_01ec64.pth", checkpoint)
    ours = create_backbone("sam_vitb", weights=path, resolution=224)
    own = ours.model.model.state_dict()
    assert own["pos_embed"].shape == (1, 14, 14, 768) and own["blocks.2.attn.rel_pos_h"].shape == (27, 64)
    assert torch.equal(own["blocks.0.attn.rel_pos_h"], encoder.blocks[0].attn.rel_pos_h)  # windowed block: 14x14 window kept
    images = torch.randn(2, 3, 224, 224)
    out = _run(ours.model, images, ("encoder_mean", "neck_mean"))
    # timm's samvit built for 1024 and fed 224 px resamples at run time: the load-time resampling is the same
    native = sam.build_model("samvit_base_patch16", 1024)
    native.load_state_dict(sam.filter_state_dict(checkpoint, native))
    assert (_run(native.eval(), images, ("encoder_mean",))["encoder_mean"] - out["encoder_mean"]).abs().max() < ATOL
    # segment-anything itself with the resized absolute embedding; its get_rel_pos resizes the 127-row tables at run time
    encoder.pos_embed = torch.nn.Parameter(sam.resize_abs_pos(encoder.pos_embed.data, (14, 14)))
    with torch.inference_mode():
        ref = encoder(images).mean((2, 3))
    assert (out["neck_mean"] - ref).abs().max() < ATOL
    assert out["encoder_mean"].std(0).mean() > 1e-3  # images are told apart: a sensible output, not a constant


def test_sam_position_resizers_are_identity_at_native_size() -> None:
    rel, pos = torch.randn(127, 64), torch.randn(1, 64, 64, 768)
    assert torch.equal(sam.resize_rel_pos(rel, 127), rel) and torch.equal(sam.resize_abs_pos(pos, (64, 64)), pos)
    from segment_anything.modeling.image_encoder import get_rel_pos

    assert torch.allclose(sam.resize_rel_pos(rel, 27)[get_rel_pos(14, 14, torch.arange(27.0)[:, None]).long().squeeze(-1)],
                          get_rel_pos(14, 14, rel), atol=1e-6)  # fmt: skip


def test_sam_filter_unit() -> None:
    sd = {"image_encoder.blocks.0.mlp.lin1.weight": torch.zeros(1), "image_encoder.neck.0.weight": torch.zeros(1),
          "mask_decoder.x": torch.zeros(1), "prompt_encoder.y": torch.zeros(1)}  # fmt: skip
    model = sam.build_model("samvit_base_patch16", 64, depth=1, global_attn_indexes=[])
    assert set(sam.filter_state_dict(sd, model)) == {"model.blocks.0.mlp.fc1.weight", "model.neck.0.weight"}
    hf = {"vision_encoder.layers.3.mlp.lin2.bias": torch.zeros(1), "vision_encoder.neck.layer_norm2.weight": torch.zeros(1),
          "vision_encoder.patch_embed.projection.weight": torch.zeros(1), "mask_decoder.z": torch.zeros(1)}  # fmt: skip
    assert set(sam.filter_state_dict(hf, model)) == {"model.blocks.3.mlp.fc2.bias", "model.neck.3.weight", "model.patch_embed.proj.weight"}

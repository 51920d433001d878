"""BLIP: release and Hugging Face layouts -> timm ViT, parity with transformers' BlipVisionModel."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from _backbones_helpers import ATOL, _random_sd, _run, _save

from fmprobe.backbones import (
    blip,
    create_backbone,
)
from fmprobe.errors import WeightsError


def blip_release(dim: int = 768, depth: int = 12, grid: int = 14) -> dict[str, torch.Tensor]:
    """model_base.pth's image encoder entries (BLIP models/vit.py), plus a momentum-encoder and a text entry."""
    shapes = {"visual_encoder.cls_token": (1, 1, dim), "visual_encoder.pos_embed": (1, 1 + grid * grid, dim),
              "visual_encoder.patch_embed.proj.weight": (dim, 3, 16, 16), "visual_encoder.patch_embed.proj.bias": (dim,),
              "visual_encoder.norm.weight": (dim,), "visual_encoder.norm.bias": (dim,)}  # fmt: skip
    for i in range(depth):
        b = f"visual_encoder.blocks.{i}."
        shapes.update({b + "norm1.weight": (dim,), b + "norm1.bias": (dim,), b + "attn.qkv.weight": (3 * dim, dim), b + "attn.qkv.bias": (3 * dim,),
                       b + "attn.proj.weight": (dim, dim), b + "attn.proj.bias": (dim,), b + "norm2.weight": (dim,), b + "norm2.bias": (dim,),
                       b + "mlp.fc1.weight": (4 * dim, dim), b + "mlp.fc1.bias": (4 * dim,), b + "mlp.fc2.weight": (dim, 4 * dim), b + "mlp.fc2.bias": (dim,)})  # fmt: skip
    sd = _random_sd(shapes, seed=11)
    sd["visual_encoder_m.cls_token"] = torch.zeros(1, 1, dim)
    sd["text_encoder.embeddings.word_embeddings.weight"] = torch.zeros(8, dim)
    return sd


def blip_to_hf(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in sd.items():
        if not key.startswith("visual_encoder."):
            continue
        k = key[len("visual_encoder."):]
        k = {"cls_token": "embeddings.class_embedding", "pos_embed": "embeddings.position_embedding", "norm.weight": "post_layernorm.weight",
             "norm.bias": "post_layernorm.bias", "patch_embed.proj.weight": "embeddings.patch_embedding.weight",
             "patch_embed.proj.bias": "embeddings.patch_embedding.bias"}.get(k, k)  # fmt: skip
        k = k.replace("blocks.", "encoder.layers.").replace("attn.qkv", "self_attn.qkv").replace("attn.proj", "self_attn.projection")
        k = k.replace(".norm1.", ".layer_norm1.").replace(".norm2.", ".layer_norm2.")
        out[k] = value
    return out


def test_blip_release_checkpoint_matches_transformers(tmp_path: Path) -> None:
    import transformers as T

    release = blip_release()
    ours = create_backbone("blip_vitb16", weights=_save(tmp_path, "model_base.pth", {"model": release, "epoch": 19}))
    cfg = T.BlipVisionConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, image_size=224,
                             patch_size=16, layer_norm_eps=1e-6)  # BLIP's vit.py uses LayerNorm(eps=1e-6)  # fmt: skip
    theirs, info = T.BlipVisionModel.from_pretrained(None, config=cfg, state_dict=blip_to_hf(release), output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    images = torch.randn(2, 3, 224, 224)
    out = _run(ours.model, images, ("cls", "mean_patch"))
    with torch.inference_mode():
        hidden = theirs.eval()(pixel_values=images).last_hidden_state
    assert (out["cls"] - hidden[:, 0]).abs().max() < ATOL
    assert (out["mean_patch"] - hidden[:, 1:].mean(1)).abs().max() < ATOL
    # Hugging Face BLIP layout (vision_model.*) converts to the same tensors
    from_release = blip.filter_state_dict(release, ours.model)
    from_hf = blip.filter_state_dict({f"vision_model.{k}": v for k, v in blip_to_hf(release).items()}, ours.model)
    assert from_release.keys() == from_hf.keys() and all(torch.equal(from_release[k], from_hf[k]) for k in from_release)
    # at 384 px the position embeddings are resampled as BLIP's interpolate_pos_embed does
    with torch.device("meta"):
        at_384 = blip.build_model("vit_base_patch16_224", 384)
    big = blip.filter_state_dict(release, at_384)["model.pos_embed"]
    expected = F.interpolate(release["visual_encoder.pos_embed"][:, 1:].reshape(1, 14, 14, 768).permute(0, 3, 1, 2), size=(24, 24),
                             mode="bicubic", align_corners=False)  # fmt: skip
    assert torch.allclose(big[:, 1:], expected.permute(0, 2, 3, 1).reshape(1, 576, 768), atol=1e-6)


def test_blip_filter_unit() -> None:
    with torch.device("meta"):
        model = blip.build_model("vit_base_patch16_224", 224)
    sd = {"visual_encoder.norm.weight": torch.ones(768), "visual_encoder_m.norm.weight": torch.zeros(768),
          "text_encoder.x": torch.zeros(1), "itm_head.weight": torch.zeros(2, 768)}  # fmt: skip
    assert set(blip.filter_state_dict(sd, model)) == {"model.norm.weight"}
    hf = {"vision_model.encoder.layers.0.self_attn.projection.bias": torch.zeros(768), "text_decoder.y": torch.zeros(1)}
    assert set(blip.filter_state_dict(hf, model)) == {"model.blocks.0.attn.proj.bias"}
    with pytest.raises(WeightsError, match="unexpected key vision_model.head"):
        blip.filter_state_dict({"vision_model.head.weight": torch.zeros(1)}, model)

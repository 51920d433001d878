"""OpenCLIP: generic entries follow open_clip; checkpoints match transformers' CLIP; timm towers round-trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _backbones_helpers import ATOL, _run, _save

from fmprobe.backbones import (
    create_backbone,
    get_spec,
    openclip,
    resolve_weights,
)
from fmprobe.errors import UnknownNameError, WeightsError


def test_generic_openclip_entries_follow_open_clip() -> None:
    generic = get_spec("openclip:ViT-B-16:laion2b_s34b_b88k")
    assert generic.preprocess == get_spec("openclip_vitb16_laion2b").preprocess
    assert generic.weights.hub_id == "laion/CLIP-ViT-B-16-laion2B-s34B-b88K"
    with pytest.raises(UnknownNameError, match="laion2b_s34b_b88k"):  # the valid tags are listed
        get_spec("openclip:ViT-B-16:laion5b")
    with pytest.raises(UnknownNameError, match="Closest: .*ViT-B-16"):
        get_spec("openclip:ViT-B-17:laion2b_s34b_b88k")
    with pytest.raises(WeightsError, match="open_clip_config.json .* not in the local Hugging Face cache"):
        get_spec("openclip:hf-hub:someone/not-cached")
    loaded = create_backbone("openclip:ViT-B-32:laion2b_s34b_b79k:random", resolution=64)
    assert loaded.random_init and _run(loaded.model, torch.randn(1, 3, 64, 64), ("embedding",))["embedding"].shape == (1, 512)
    with pytest.raises(WeightsError, match="names no pretrained weights"):
        resolve_weights("openclip:ViT-B-16")  # no tag: needs --weights


def openclip_to_hf(sd: dict[str, torch.Tensor], depth: int) -> dict[str, torch.Tensor]:
    v = {k[len("visual."):]: t for k, t in sd.items() if k.startswith("visual.")}
    out = {"vision_model.embeddings.class_embedding": v["class_embedding"], "vision_model.embeddings.patch_embedding.weight": v["conv1.weight"],
           "vision_model.embeddings.position_embedding.weight": v["positional_embedding"], "visual_projection.weight": v["proj"].T.contiguous(),
           "vision_model.pre_layrnorm.weight": v["ln_pre.weight"], "vision_model.pre_layrnorm.bias": v["ln_pre.bias"],
           "vision_model.post_layernorm.weight": v["ln_post.weight"], "vision_model.post_layernorm.bias": v["ln_post.bias"]}  # fmt: skip
    for i in range(depth):
        b, h = f"transformer.resblocks.{i}.", f"vision_model.encoder.layers.{i}."
        for part, w, bias in zip(("q", "k", "v"), v[b + "attn.in_proj_weight"].chunk(3), v[b + "attn.in_proj_bias"].chunk(3), strict=True):
            out[h + f"self_attn.{part}_proj.weight"], out[h + f"self_attn.{part}_proj.bias"] = w, bias
        for kind in ("weight", "bias"):
            out[h + f"self_attn.out_proj.{kind}"] = v[b + f"attn.out_proj.{kind}"]
            out[h + f"layer_norm1.{kind}"], out[h + f"layer_norm2.{kind}"] = v[b + f"ln_1.{kind}"], v[b + f"ln_2.{kind}"]
            out[h + f"mlp.fc1.{kind}"], out[h + f"mlp.fc2.{kind}"] = v[b + f"mlp.c_fc.{kind}"], v[b + f"mlp.c_proj.{kind}"]
    return out


def test_openclip_checkpoint_matches_transformers_clip(tmp_path: Path) -> None:
    import open_clip
    import transformers as T

    torch.manual_seed(0)
    clip = open_clip.create_model("ViT-B-16", pretrained=None)  # the full model: the checkpoint has a text tower too
    with torch.no_grad():
        for p in clip.visual.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    sd = clip.state_dict()
    ours = create_backbone("openclip_vitb16_laion2b", weights=_save(tmp_path, "open_clip_pytorch_model.bin", sd))
    cfg = T.CLIPVisionConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, image_size=224,
                             patch_size=16, projection_dim=512, hidden_act="gelu", layer_norm_eps=1e-5)  # fmt: skip
    theirs, info = T.CLIPVisionModelWithProjection.from_pretrained(None, config=cfg, state_dict=openclip_to_hf(sd, 12), output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    images = torch.randn(2, 3, 224, 224)
    out = _run(ours.model, images, ("embedding", "pooled", "mean_patch"))
    with torch.inference_mode():
        ref = theirs.eval()(pixel_values=images)
        direct = clip.eval().encode_image(images)
    assert (out["embedding"] - ref.image_embeds).abs().max() < ATOL
    with torch.inference_mode():
        pooled, patches = theirs.vision_model.post_layernorm(ref.last_hidden_state).split((1, 196), dim=1)
    assert (out["pooled"] - pooled[:, 0]).abs().max() < ATOL
    assert (out["mean_patch"] - patches.mean(1)).abs().max() < ATOL
    assert (out["embedding"] - direct).abs().max() < ATOL
    # at another resolution open_clip's own resize_pos_embed is applied
    with torch.device("meta"):
        small = get_spec("openclip_vitb16_laion2b").build(112)
    assert openclip.filter_state_dict(sd, small)["visual.positional_embedding"].shape == (50, 768)


def test_openclip_filter_unit_and_timm_tower(tmp_path: Path) -> None:
    sd = {"module.visual.proj": torch.zeros(1), "module.transformer.x": torch.zeros(1), "module.logit_scale": torch.zeros(())}
    assert set(openclip.filter_state_dict(sd, _Holder())) == {"visual.proj"}
    # BiomedCLIP (timm trunk + linear projection): its own state dict round-trips strictly, readouts consistent
    random = create_backbone("biomedclip:random").model
    full = {f"visual.{k}": v for k, v in random.visual.state_dict().items()}
    full["text.transformer.embeddings.word_embeddings.weight"] = torch.zeros(4, 4)
    loaded = create_backbone("biomedclip", weights=_save(tmp_path, "open_clip_pytorch_model.bin", full))
    images = torch.randn(1, 3, 224, 224)
    out = _run(loaded.model, images, ("embedding", "pooled"))
    assert torch.allclose(out["embedding"], loaded.model.visual.head(out["pooled"]), atol=1e-6)
    with torch.inference_mode():
        assert torch.allclose(out["embedding"], loaded.model.visual(images), atol=1e-5)


class _Holder(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.visual = torch.nn.Module()

"""Foundation-model families (DINOv2, OpenCLIP, SAM, SEEM, BLIP and beyond), proven without any model hub.

Parity tests write a random state dict in the authors' published key layout, load it through fmprobe
(``create_backbone(name, weights=path)``) and compare with an independent implementation fed the same weights.
Large variants are checked for shapes on the meta device; small ones run for real.
"""

from __future__ import annotations

import pickle
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from fmprobe.backbones import (
    BACKBONES,
    blip,
    create_backbone,
    describe_shapes,
    dinov2,
    get_spec,
    openclip,
    parse_name,
    resolve_weights,
    sam,
    sam2,
    seem,
)
from fmprobe.backbones.base import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD
from fmprobe.backbones.preprocess import ImageTransform
from fmprobe.errors import FmprobeError, UnknownNameError, WeightsError

FAMILIES = ("dinov2", "openclip", "sam", "seem", "blip", "rad_dino", "mae", "sam2", "aimv2", "dinov3")
ATOL = 1e-4


def _random_sd(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors; 1-d weights of norms/scales near 1 so activations stay in a realistic range."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in shapes.items():
        t = torch.randn(*shape, generator=g) * 0.02
        if key.endswith(("norm1.weight", "norm2.weight", "norm.weight", "gamma", "ln_1.weight", "ln_2.weight")) or ".norm" in key and key.endswith("weight") and len(shape) == 1:
            t = t * 5 + 1
        out[key] = t
    return out


def _save(tmp_path: Path, name: str, obj: object) -> Path:
    path = tmp_path / name
    if name.endswith(".safetensors"):
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in obj.items()}, str(path))  # type: ignore[union-attr]
    else:
        torch.save(obj, path)
    return path


def _run(model: torch.nn.Module, images: torch.Tensor, readouts: tuple[str, ...]) -> dict[str, torch.Tensor]:
    with torch.inference_mode():
        return model(images, readouts)


@pytest.fixture(autouse=True)
def _no_hub_caches(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Empty Hugging Face and torch hub caches: every 'published file' lookup must miss, offline."""
    root = tmp_path_factory.getbasetemp() / "empty-caches"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(root / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(root / "torch"))
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(root / "hf"))
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(root / "torch" / "hub"))
    yield
    torch.hub.set_dir(previous)


@pytest.fixture(autouse=True, scope="module")
def _fast_random_init():
    """Every random weight here is either overwritten by a checkpoint or only needs to be random: draw them with a
    clamped normal instead of the inverse-CDF truncated normal (timm, transformers), several times faster on CPU."""
    import timm.layers.weight_init as weight_init

    def fast(tensor, mean=0.0, std=1.0, a=-2.0, b=2.0, generator=None):
        with torch.no_grad():
            return tensor.normal_(mean, std).clamp_(a, b)

    patch = pytest.MonkeyPatch()
    patch.setattr(weight_init, "_trunc_normal_", fast)
    patch.setattr(torch.nn.init, "_no_grad_trunc_normal_", fast)
    yield
    patch.undo()


# ---------------------------------------------------------------------------------------------------------------
# Registry: every family and variant builds; names and generic escapes resolve
# ---------------------------------------------------------------------------------------------------------------
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
    assert parse_name("openclip:ViT-B-16:laion2b_s34b_b88k") == ("openclip:ViT-B-16:laion2b_s34b_b88k", False)
    assert parse_name("openclip:ViT-B-16:laion2b_s34b_b88k:random") == ("openclip:ViT-B-16:laion2b_s34b_b88k", True)
    assert parse_name("openclip:hf-hub:org/repo") == ("openclip:hf-hub:org/repo", False)
    assert parse_name("hf:facebook/dinov2-small:random") == ("hf:facebook/dinov2-small", True)
    with pytest.raises(UnknownNameError, match="modifier 'laion2b'"):
        parse_name("dinov2_vitb14:laion2b")
    with pytest.raises(UnknownNameError, match="Closest: .*dinov2_vitb14"):
        get_spec("dinov2_vitb16")


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


# ---------------------------------------------------------------------------------------------------------------
# Preprocessing constants: the published ones
# ---------------------------------------------------------------------------------------------------------------
def test_preprocessing_matches_each_project() -> None:
    from open_clip import pretrained

    p = {name: get_spec(name).preprocess for name in BACKBONES}
    # DINOv2 make_classification_eval_transform: Resize(256) + CenterCrop(224), bicubic, ImageNet stats
    for name in ("dinov2_vits14", "dinov2_vitg14_reg", "dinov3_vitb16", "mae_vitb16"):
        assert (p[name].size, round(p[name].size / p[name].crop_pct), p[name].interpolation) == (224, 256, "bicubic")
        assert (p[name].mean, p[name].std, p[name].resize_mode) == (IMAGENET_MEAN, IMAGENET_STD, "center_crop")
    # open_clip: the pretrained config of the exact weights
    for name, (model, tag) in {"openclip_vitb16_laion2b": ("ViT-B-16", "laion2b_s34b_b88k"),
                               "siglip_vitb16": ("ViT-B-16-SigLIP", "webli"), "siglip2_vitb16": ("ViT-B-16-SigLIP2", "webli")}.items():  # fmt: skip
        cfg = pretrained.get_pretrained_cfg(model, tag)
        mode = {"shortest": "center_crop", "squash": "squash"}[cfg["resize_mode"]]
        assert (p[name].mean, p[name].std, p[name].interpolation, p[name].resize_mode) == (cfg["mean"], cfg["std"], cfg["interpolation"], mode)
        assert p[name].size == openclip.model_config(model)["vision_cfg"]["image_size"] == 224 and p[name].crop_pct == 1.0
        assert get_spec(name).weights.hub_id == cfg["hf_hub"].rstrip("/")
    assert (p["biomedclip"].mean, p["biomedclip"].std, p["biomedclip"].size) == (CLIP_MEAN, CLIP_STD, 224)
    # SAM: pixel_mean/std on 0-255 (segment-anything's Sam defaults), longest side 1024, bilinear (torchvision default)
    import inspect

    from segment_anything.modeling import Sam

    defaults = inspect.signature(Sam.__init__).parameters
    assert np.allclose(np.array(p["sam_vitb"].mean) * 255, defaults["pixel_mean"].default)
    assert np.allclose(np.array(p["sam_vitb"].std) * 255, defaults["pixel_std"].default)
    assert (p["sam_vith"].size, p["sam_vith"].resize_mode, p["sam_vith"].interpolation) == (1024, "longest_pad", "bilinear")
    # SEEM: PIXEL_MEAN [123.675, 116.280, 103.530] / PIXEL_STD [58.395, 57.120, 57.375]; demo resize 512 bicubic
    assert np.allclose(np.array(p["seem_focalt"].mean) * 255, [123.675, 116.280, 103.530])
    assert np.allclose(np.array(p["seem_focall"].std) * 255, [58.395, 57.120, 57.375])
    assert (p["seem_focalt"].size, p["seem_focalt"].interpolation) == (512, "bicubic")
    # BLIP transform_test: Resize((224, 224), BICUBIC), CLIP stats
    assert (p["blip_vitb16"].size, p["blip_vitb16"].resize_mode, p["blip_vitb16"].interpolation) == (224, "squash", "bicubic")
    assert (p["blip_vitb16"].mean, p["blip_vitb16"].std) == (CLIP_MEAN, CLIP_STD)
    # RAD-DINO preprocessor_config.json; SAM 2 squash 1024; AIMv2 as timm's config of the apple weights
    assert (p["rad_dino"].size, p["rad_dino"].crop_pct, p["rad_dino"].mean, p["rad_dino"].std) == (518, 1.0, (0.5307,) * 3, (0.2583,) * 3)
    assert (p["sam2_hiera_l"].size, p["sam2_hiera_l"].resize_mode, p["sam2_hiera_l"].mean) == (1024, "squash", IMAGENET_MEAN)
    import timm

    aim = timm.get_pretrained_cfg("aimv2_large_patch14_224.apple_pt")
    assert (p["aimv2_vitl14"].mean, p["aimv2_vitl14"].std, p["aimv2_vitl14"].crop_pct) == (aim.mean, aim.std, aim.crop_pct)


def test_sam_transform_equals_segment_anythings_pipeline() -> None:
    """ResizeLongestSide(1024) + (x - pixel_mean) / pixel_std + bottom/right zero pad, on a non-square image."""
    from segment_anything.utils.transforms import ResizeLongestSide

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (300, 500, 3), dtype=np.uint8)  # 1024 * 300 / 500 = 614.4: no rounding tie
    ours = ImageTransform(get_spec("sam_vitb").preprocess)(Image.fromarray(image))
    resized = torch.from_numpy(ResizeLongestSide(1024).apply_image(image)).permute(2, 0, 1).float()
    mean = torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375]).view(3, 1, 1)
    theirs = F.pad((resized - mean) / std, (0, 1024 - resized.shape[2], 0, 1024 - resized.shape[1]))
    assert ours.shape == theirs.shape == (3, 1024, 1024)
    assert (ours - theirs).abs().max() < 1e-4


# ---------------------------------------------------------------------------------------------------------------
# DINOv2: torch.hub release layout -> timm, parity with transformers' Dinov2Model
# ---------------------------------------------------------------------------------------------------------------
def release_dinov2(dim: int, depth: int, registers: int = 0, swiglu_hidden: int = 0, grid: int = 37) -> dict[str, torch.Tensor]:
    """A random state dict in the layout of dinov2_vit*14[_reg4]_pretrain.pth (dinov2/models/vision_transformer.py)."""
    shapes: dict[str, tuple[int, ...]] = {
        "cls_token": (1, 1, dim), "pos_embed": (1, 1 + grid * grid, dim), "mask_token": (1, dim),
        "patch_embed.proj.weight": (dim, 3, 14, 14), "patch_embed.proj.bias": (dim,),
    }  # fmt: skip
    if registers:
        shapes["register_tokens"] = (1, registers, dim)
    for i in range(depth):
        b = f"blocks.{i}."
        shapes.update({b + "norm1.weight": (dim,), b + "norm1.bias": (dim,), b + "attn.qkv.weight": (3 * dim, dim),
                       b + "attn.qkv.bias": (3 * dim,), b + "attn.proj.weight": (dim, dim), b + "attn.proj.bias": (dim,),
                       b + "ls1.gamma": (dim,), b + "norm2.weight": (dim,), b + "norm2.bias": (dim,), b + "ls2.gamma": (dim,)})  # fmt: skip
        if swiglu_hidden:  # SwiGLUFFNFused of ViT-g
            shapes.update({b + "mlp.w12.weight": (2 * swiglu_hidden, dim), b + "mlp.w12.bias": (2 * swiglu_hidden,),
                           b + "mlp.w3.weight": (dim, swiglu_hidden), b + "mlp.w3.bias": (dim,)})  # fmt: skip
        else:
            shapes.update({b + "mlp.fc1.weight": (4 * dim, dim), b + "mlp.fc1.bias": (4 * dim,),
                           b + "mlp.fc2.weight": (dim, 4 * dim), b + "mlp.fc2.bias": (dim,)})  # fmt: skip
    shapes.update({"norm.weight": (dim,), "norm.bias": (dim,)})
    sd = _random_sd(shapes, seed=dim + depth + registers)
    for key in sd:
        if key.endswith("ls1.gamma") or key.endswith("ls2.gamma"):
            sd[key] = sd[key].abs() * 5 + 0.2
    return sd


def release_to_hf(sd: dict[str, torch.Tensor], depth: int) -> dict[str, torch.Tensor]:
    """The same weights under the names of the published facebook/dinov2-* model.safetensors (transformers)."""
    out = {"embeddings.cls_token": sd["cls_token"], "embeddings.mask_token": sd["mask_token"],
           "embeddings.position_embeddings": sd["pos_embed"], "layernorm.weight": sd["norm.weight"], "layernorm.bias": sd["norm.bias"],
           "embeddings.patch_embeddings.projection.weight": sd["patch_embed.proj.weight"],
           "embeddings.patch_embeddings.projection.bias": sd["patch_embed.proj.bias"]}  # fmt: skip
    if "register_tokens" in sd:
        out["embeddings.register_tokens"] = sd["register_tokens"]
    for i in range(depth):
        b, h = f"blocks.{i}.", f"encoder.layer.{i}."
        for kind in ("weight", "bias"):
            for part, tensor in zip(("query", "key", "value"), sd[b + f"attn.qkv.{kind}"].chunk(3), strict=True):
                out[h + f"attention.attention.{part}.{kind}"] = tensor
            out[h + f"attention.output.dense.{kind}"] = sd[b + f"attn.proj.{kind}"]
            for n in ("norm1", "norm2"):
                out[h + f"{n}.{kind}"] = sd[b + f"{n}.{kind}"]
            if b + "mlp.w12.weight" in sd:
                out[h + f"mlp.weights_in.{kind}"] = sd[b + f"mlp.w12.{kind}"]
                out[h + f"mlp.weights_out.{kind}"] = sd[b + f"mlp.w3.{kind}"]
            else:
                out[h + f"mlp.fc1.{kind}"] = sd[b + f"mlp.fc1.{kind}"]
                out[h + f"mlp.fc2.{kind}"] = sd[b + f"mlp.fc2.{kind}"]
        out[h + "layer_scale1.lambda1"] = sd[b + "ls1.gamma"]
        out[h + "layer_scale2.lambda1"] = sd[b + "ls2.gamma"]
    return out


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


# ---------------------------------------------------------------------------------------------------------------
# SAM: segment-anything release -> timm samvit, parity with segment-anything's ImageEncoderViT
# ---------------------------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------------------------
# SEEM: SEEM's published FocalNet key names and shapes load strictly; stage widths and strides
# ---------------------------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------------------------
# BLIP: visual_encoder.* -> timm ViT, parity with transformers' BlipVisionModel
# ---------------------------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------------------------
# OpenCLIP: open_clip checkpoint -> image tower, parity with transformers' CLIPVisionModelWithProjection
# ---------------------------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------------------------
# Beyond the study: MAE, SAM 2, AIMv2, DINOv3 (timm), the hf: escape (transformers)
# ---------------------------------------------------------------------------------------------------------------
def test_mae_full_checkpoint_drops_decoder(tmp_path: Path) -> None:
    with torch.device("meta"):
        shapes = {k[len("model."):]: tuple(v.shape) for k, v in get_spec("mae_vitb16").build(224).state_dict().items()}
    encoder = _random_sd(shapes)  # MAE's encoder keys are timm's
    sd = {"model": {**encoder, "decoder_embed.weight": torch.zeros(512, 768), "mask_token": torch.zeros(1, 1, 512),
                    "decoder_blocks.0.norm1.weight": torch.zeros(512)}}  # a full (visualisation) checkpoint  # fmt: skip
    loaded = create_backbone("mae_vitb16", weights=_save(tmp_path, "mae_visualize_vit_base.pth", sd)).model.model.state_dict()
    assert loaded.keys() == encoder.keys() and all(torch.equal(loaded[k], encoder[k]) for k in encoder)


def test_sam2_release_layout_maps_to_the_trunk() -> None:
    model = sam2.build_model("sam2_hiera_tiny", 64)
    own = {k[len("trunk."):]: v for k, v in model.state_dict().items()}
    release = {"image_encoder.trunk." + k.replace("mlp.fc1", "mlp.layers.0").replace("mlp.fc2", "mlp.layers.1"): v for k, v in own.items()}
    release.update({"image_encoder.neck.convs.0.conv.weight": torch.zeros(1), "sam_mask_decoder.iou_token.weight": torch.zeros(1)})
    assert "image_encoder.trunk.blocks.0.mlp.layers.0.weight" in release
    model.load_state_dict(sam2.filter_state_dict(release, model), strict=True)
    timm_layout = {**own, "head.norm.weight": torch.zeros(768)}
    model.load_state_dict(sam2.filter_state_dict(timm_layout, model), strict=True)


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


def _tiny_hf_dinov2(folder: Path, release: dict[str, torch.Tensor]) -> None:
    import json

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "dinov2", "architectures": ["Dinov2Model"], "hidden_size": 64,
                                                     "num_hidden_layers": 2, "num_attention_heads": 4, "image_size": 56,
                                                     "patch_size": 14, "layerscale_value": 1.0}))  # fmt: skip
    (folder / "preprocessor_config.json").write_text(json.dumps({"crop_size": {"height": 56, "width": 56}, "do_center_crop": True,
        "do_resize": True, "image_mean": [0.5307] * 3, "image_std": [0.2583] * 3, "resample": 3, "size": {"shortest_edge": 64}}))  # fmt: skip
    _save(folder, "model.safetensors", release_to_hf(release, 2))


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


# ---------------------------------------------------------------------------------------------------------------
# Weights: named errors for missing, unsafe and mismatching files
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name,expected",
    [
        ("dinov2_vitb14", r"dinov2_vitb14_pretrain\.pth from https://dl\.fbaipublicfiles\.com/dinov2/dinov2_vitb14/"),
        ("dinov2_vitl14_reg", r"dinov2_vitl14_reg4_pretrain\.pth .*facebook/dinov2-with-registers-large"),
        ("sam_vitb", r"sam_vit_b_01ec64\.pth from https://dl\.fbaipublicfiles\.com/segment_anything/"),
        ("seem_focalt", r"seem_focalt_v0\.pt from https://huggingface\.co/xdecoder/SEEM"),
        ("blip_vitb16", r"model_base\.pth from https://storage\.googleapis\.com/sfr-vision-language-research/BLIP/models/"),
        ("openclip_vitb16_laion2b", r"open_clip_model\.safetensors from https://huggingface\.co/laion/CLIP-ViT-B-16-laion2B-s34B-b88K"),
        ("biomedclip", r"microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"),
        ("rad_dino", r"model\.safetensors from https://huggingface\.co/microsoft/rad-dino"),
        ("mae_vitb16", r"mae_pretrain_vit_base\.pth"),
        ("sam2_hiera_t", r"sam2_hiera_tiny\.pt"),
        ("aimv2_vitl14", r"apple/aimv2-large-patch14-224"),
        ("dinov3_vitb16", r"timm/vit_base_patch16_dinov3\.lvd1689m"),
    ],
)
def test_missing_weights_name_the_file_and_the_flag(name: str, expected: str) -> None:
    with pytest.raises(WeightsError, match=expected) as info:
        resolve_weights(name)
    message = str(info.value)
    assert f"no weights for {name!r}" in message and "HF_HUB_OFFLINE=1" in message and "--weights PATH" in message
    assert f"{name}:random" in message


class _Config:  # an arbitrary Python object: unpickling it would run code
    pass


def test_unsafe_and_mismatching_checkpoints_are_refused(tmp_path: Path) -> None:
    unsafe = tmp_path / "dinov2_vits14_pretrain.pth"
    torch.save({"model": {"cls_token": torch.zeros(1)}, "args": _Config()}, unsafe, pickle_protocol=pickle.DEFAULT_PROTOCOL)
    with pytest.raises(WeightsError, match="refused: this checkpoint needs arbitrary Python objects"):
        create_backbone("dinov2_vits14", weights=unsafe)
    tiny = _save(tmp_path, "t.pth", release_dinov2(192, 12))
    with pytest.raises(WeightsError, match=r"shape mismatches \(first: model\.cls_token: checkpoint \(1, 1, 192\) vs model \(1, 1, 384\)"):
        create_backbone("dinov2_vits14", weights=tiny, resolution=56)
    with pytest.raises(WeightsError, match=r"unexpected keys \(first: model\.blocks\.12\."):
        create_backbone("dinov2_vits14", weights=_save(tmp_path, "deep.pth", release_dinov2(384, 13)), resolution=56)
    with pytest.raises(WeightsError, match="not found"):
        create_backbone("sam_vitb", weights=tmp_path / "absent.pth")


# ---------------------------------------------------------------------------------------------------------------
# End to end: fmprobe's extraction on demo images, offline, one variant per family
# ---------------------------------------------------------------------------------------------------------------
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
                 dtype="fp32", progress=False, num_workers=0, log=lambda _: None)  # fp32: bf16 autocast is slow on some CPUs  # fmt: skip
    assert result.path.exists() and not result.cache_hit and result.n_images > 0
    features = FeatureFile(result.path)
    assert set(readouts) <= set(features.readouts)

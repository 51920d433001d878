"""Helpers shared by the backbone tests: random state dicts in published layouts, saving, running."""

from __future__ import annotations

from pathlib import Path

import torch


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


ATOL = 1e-4


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


def _tiny_hf_dinov2(folder: Path, release: dict[str, torch.Tensor]) -> None:
    import json

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "dinov2", "architectures": ["Dinov2Model"], "hidden_size": 64,
                                                     "num_hidden_layers": 2, "num_attention_heads": 4, "image_size": 56,
                                                     "patch_size": 14, "layerscale_value": 1.0}))  # fmt: skip
    (folder / "preprocessor_config.json").write_text(json.dumps({"crop_size": {"height": 56, "width": 56}, "do_center_crop": True,
        "do_resize": True, "image_mean": [0.5307] * 3, "image_std": [0.2583] * 3, "resample": 3, "size": {"shortest_edge": 64}}))  # fmt: skip
    _save(folder, "model.safetensors", release_to_hf(release, 2))

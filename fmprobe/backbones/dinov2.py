"""DINOv2 (Oquab et al., TMLR 2024) on timm's maintained ``vit_*_patch14[_reg4]_dinov2``.

Published weights, both layouts accepted by :func:`filter_state_dict`:

* the torch.hub release ``dinov2_vit{s,b,l,g}14[_reg4]_pretrain.pth``: ``cls_token``, ``pos_embed`` (class token +
  37x37 grid, trained at 518 px), ``mask_token``, ``register_tokens``, ``patch_embed.proj``,
  ``blocks.N.{norm1, attn.qkv, attn.proj, ls1.gamma, norm2, mlp.fc1|mlp.w12, mlp.fc2|mlp.w3, ls2.gamma}``, ``norm``;
* Hugging Face ``facebook/dinov2-*`` and ``microsoft/rad-dino`` (``rad_dino.py``), transformers layout: ``embeddings.*``,
  ``encoder.layer.N.attention.attention.{query,key,value}``, ``attention.output.dense``, ``layer_scale1.lambda1``,
  ``mlp.weights_in/weights_out`` for ViT-g, ``layernorm``.

Both become timm keys; the position embeddings are resampled to the target grid *as the authors' code does at run
time*: the DINOv2 hub model interpolates bicubically, without antialiasing, by the scale factor
``(grid + 0.1) / 37`` (its ``interpolate_offset`` kludge); RAD-DINO, published for transformers, by output size.
Preprocessing is DINOv2's ``make_classification_eval_transform``: resize 256, centre crop 224, bicubic,
ImageNet mean/std. Default readout: the final-norm class token.
"""

from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F
from torch import nn

from fmprobe.backbones.base import BackboneSpec, Preprocess, StateDict, WeightsInfo, register
from fmprobe.backbones.timm_features import build_timm_tokens, timm_family_entry
from fmprobe.backbones.weights import rename_key
from fmprobe.errors import WeightsError

RELEASE_URL = "https://dl.fbaipublicfiles.com/dinov2"
# size letter -> (timm architecture stem, Hugging Face size word, paper name)
SIZES = {
    "s": ("vit_small_patch14", "small", "ViT-S/14"),
    "b": ("vit_base_patch14", "base", "ViT-B/14"),
    "l": ("vit_large_patch14", "large", "ViT-L/14"),
    "g": ("vit_giant_patch14", "giant", "ViT-g/14"),
}
DINOV2_PREPROCESS = Preprocess(size=224, crop_pct=224 / 256, interpolation="bicubic")


build_model = build_timm_tokens  # a randomly initialised timm DINOv2 ViT (``overrides`` e.g. ``depth`` for tests)


def resample_pos_embed(pos: torch.Tensor, grid: tuple[int, int], num_prefix: int, offset: float = 0.1) -> torch.Tensor:
    """Bicubic, no antialias; by scale factor ``(grid + offset) / M`` as the DINOv2 hub model does (``offset=0.1``)
    or, with ``offset=0``, by output size as transformers' Dinov2Model does. Identity when the grid already fits."""
    n = pos.shape[1] - num_prefix
    m = math.isqrt(n)
    if m * m != n:
        raise WeightsError(f"position embedding with {n} patch positions is not a square grid; is this a DINOv2 checkpoint?")
    if (m, m) == tuple(grid):
        return pos
    prefix, patch = pos[:, :num_prefix], pos[:, num_prefix:]
    dim = pos.shape[-1]
    patch = patch.float().reshape(1, m, m, dim).permute(0, 3, 1, 2)
    h, w = grid
    if offset:
        patch = F.interpolate(patch, scale_factor=((h + offset) / m, (w + offset) / m), mode="bicubic", antialias=False)
    else:
        patch = F.interpolate(patch, size=(h, w), mode="bicubic", align_corners=False, antialias=False)
    patch = patch.permute(0, 2, 3, 1).reshape(1, h * w, dim).to(pos.dtype)
    return torch.cat([prefix, patch], dim=1)


HF_RENAMES = (
    (r"^embeddings\.cls_token$", "cls_token"),
    (r"^embeddings\.mask_token$", "mask_token"),
    (r"^embeddings\.register_tokens$", "register_tokens"),
    (r"^embeddings\.position_embeddings$", "pos_embed"),
    (r"^embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."),
    (r"^encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"blocks.\1.attn.proj."),
    (r"^encoder\.layer\.(\d+)\.attention\.o_proj\.", r"blocks.\1.attn.proj."),
    (r"^encoder\.layer\.(\d+)\.layer_scale(\d)\.lambda1$", r"blocks.\1.ls\2.gamma"),
    (r"^encoder\.layer\.(\d+)\.mlp\.weights_in\.", r"blocks.\1.mlp.w12."),
    (r"^encoder\.layer\.(\d+)\.mlp\.weights_out\.", r"blocks.\1.mlp.w3."),
    (r"^encoder\.layer\.(\d+)\.mlp\.down_proj\.", r"blocks.\1.mlp.w3."),
    (r"^encoder\.layer\.(\d+)\.", r"blocks.\1."),
    (r"^layernorm\.", "norm."),
)
QKV = re.compile(r"^encoder\.layer\.(\d+)\.attention\.(?:attention\.(query|key|value)|(q|k|v)_proj)\.(weight|bias)$")
GATE_UP = re.compile(r"^encoder\.layer\.(\d+)\.mlp\.(gate|up)_proj\.(weight|bias)$")


def hf_to_release(state_dict: StateDict) -> StateDict:
    """transformers Dinov2 / Dinov2WithRegisters keys (published v4 names or v5 names) -> the torch.hub release's."""
    if any(k.startswith("dinov2.") for k in state_dict):
        state_dict = {k[len("dinov2."):]: v for k, v in state_dict.items() if k.startswith("dinov2.")}
    out: StateDict = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    glu: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, value in state_dict.items():
        if m := QKV.match(key):
            part = (m.group(2) or m.group(3))[0]
            qkv.setdefault((m.group(1), m.group(4)), {})[part] = value
            continue
        if m := GATE_UP.match(key):
            glu.setdefault((m.group(1), m.group(3)), {})[m.group(2)] = value
            continue
        out[rename_key(key, HF_RENAMES, "a Hugging Face DINOv2 checkpoint")] = value
    for (layer, kind), parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise WeightsError(f"layer {layer}: query/key/value {kind} incomplete in the DINOv2 checkpoint.")
        out[f"blocks.{layer}.attn.qkv.{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    for (layer, kind), parts in glu.items():  # transformers' Chunk(dim=0): gate first, then up
        out[f"blocks.{layer}.mlp.w12.{kind}"] = torch.cat([parts["gate"], parts["up"]], dim=0)
    if "mask_token" in out and out["mask_token"].ndim == 3:
        out["mask_token"] = out["mask_token"].reshape(1, -1)
    return out


def filter_state_dict(state_dict: StateDict, model: nn.Module, offset: float = 0.1) -> StateDict:
    """A DINOv2 checkpoint (torch.hub release, Hugging Face or timm layout) -> this model's keys (``model.*``).

    Drops ``mask_token`` (masked-image training only); registers become timm's ``reg_token`` with the class
    token's position folded into ``cls_token`` (timm's no-embed-class layout, numerically the same); the SwiGLU
    ``w12/w3`` of ViT-g become ``fc1/fc2``; ``pos_embed`` is resampled to the model's grid (see module doc).
    """
    if any(k.startswith(("embeddings.", "dinov2.embeddings.")) for k in state_dict):
        state_dict = hf_to_release(state_dict)
    inner = getattr(model, "model", model)
    sd = dict(state_dict)
    sd.pop("mask_token", None)
    grid = tuple(inner.patch_embed.grid_size)
    if "register_tokens" in sd:  # release layout with registers: pos_embed still has the class position
        pos = resample_pos_embed(sd.pop("pos_embed"), grid, num_prefix=1, offset=offset)
        sd["reg_token"] = sd.pop("register_tokens")
        sd["cls_token"] = sd["cls_token"] + pos[:, :1]
        sd["pos_embed"] = pos[:, 1:]
    elif "pos_embed" in sd:
        num_prefix = 0 if getattr(inner, "no_embed_class", False) else 1
        sd["pos_embed"] = resample_pos_embed(sd["pos_embed"], grid, num_prefix=num_prefix, offset=offset)
    out: StateDict = {}
    for key, value in sd.items():
        key = re.sub(r"^(blocks\.\d+\.mlp\.)w12\.", r"\1fc1.", key)
        key = re.sub(r"^(blocks\.\d+\.mlp\.)w3\.", r"\1fc2.", key)
        out[f"model.{key}"] = value
    return out


def release_file(size: str, registers: bool) -> str:
    return f"dinov2_vit{size}14{'_reg4' if registers else ''}_pretrain.pth"


def entry(size: str, registers: bool = False) -> BackboneSpec:
    stem, word, paper_name = SIZES[size]
    name = f"dinov2_vit{size}14{'_reg' if registers else ''}"
    url = f"{RELEASE_URL}/dinov2_vit{size}14/{release_file(size, registers)}"
    hf_repo = f"facebook/dinov2-{'with-registers-' if registers else ''}{word}"
    return timm_family_entry(
        name, "dinov2", f"{stem}{'_reg4' if registers else ''}_dinov2",
        weights=WeightsInfo(urls=(url,), hf=((hf_repo, "model.safetensors"),), license="apache-2.0"),
        preprocess=DINOV2_PREPROCESS, filter_state_dict=filter_state_dict,
        description=f"DINOv2 {paper_name}{' with 4 registers' if registers else ''}, self-supervised on LVD-142M",
        paper="Oquab et al., DINOv2: Learning Robust Visual Features without Supervision (TMLR 2024)"
        + ("; Darcet et al., Vision Transformers Need Registers (ICLR 2024)" if registers else ""),
    )  # fmt: skip


for _registers in (False, True):
    for _size in SIZES:
        register(entry(_size, _registers))

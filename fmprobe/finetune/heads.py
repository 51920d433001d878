"""Classification heads.

* :class:`LinearHead`: one linear layer on the backbone's default readout (pooled features or the class token).
* :class:`AttentionPoolHead` (default for ``attention``): Linear+LayerNorm projector, then one learned query that
  attends over the patch tokens (timm's ``AttentionPoolLatent``: multi-head cross-attention + MLP), then a linear
  classifier. Randomly initialised and light (``dim`` 256 by default).
* :class:`DeitBlockHead` (``--head deit``): the study's head: Linear+LayerNorm projector to 768, a class token and
  one transformer block initialised from DeiT-B's last block (and its final norm), then a linear classifier.

The attention heads read ``FeatureModel.tokens(images)`` (``[B, N, D]`` patch tokens), which every family provides.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from fmprobe.backbones import resolve_weights
from fmprobe.backbones.weights import read_checkpoint
from fmprobe.errors import WeightsError
from fmprobe.finetune.recipe import Head

DEIT_BACKBONE = "deit_base_imagenet"  # the registry entry whose published weights initialise the DeiT head
DEIT_DIM, DEIT_HEADS = 768, 12


class LinearHead(nn.Module):
    def __init__(self, in_dim: int, num_outputs: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_dim, num_outputs)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features)


class AttentionPoolHead(nn.Module):
    """Projector (Linear+LayerNorm) -> one learned query attending over the tokens -> linear classifier."""

    def __init__(self, in_dim: int, num_outputs: int, dim: int = 256, num_heads: int = 4) -> None:
        super().__init__()
        from timm.layers import AttentionPoolLatent

        self.proj = nn.Sequential(nn.Linear(in_dim, dim), nn.LayerNorm(dim))
        self.pool = AttentionPoolLatent(dim, num_heads=num_heads, mlp_ratio=4.0, latent_len=1, pool_type="token")
        self.norm = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, num_outputs)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(self.pool(self.proj(tokens))))


class DeitBlockHead(nn.Module):
    """Projector (Linear+LayerNorm) to 768 -> [CLS; tokens] through one DeiT-B block -> norm -> linear classifier."""

    def __init__(self, in_dim: int, num_outputs: int, dim: int = DEIT_DIM, num_heads: int = DEIT_HEADS) -> None:
        super().__init__()
        from timm.models.vision_transformer import Block

        self.proj = nn.Sequential(nn.Linear(in_dim, dim), nn.LayerNorm(dim))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.block = Block(dim, num_heads, mlp_ratio=4.0, qkv_bias=True)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.fc = nn.Linear(dim, num_outputs)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.proj(tokens)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)
        return self.fc(self.norm(self.block(x))[:, 0])

    def load_deit(self, state_dict: dict[str, torch.Tensor], where: str) -> None:
        """Initialise the class token, the block and the norm from a DeiT-B checkpoint (its last block), strictly."""
        keys = [k for k in state_dict if k.startswith("blocks.")]
        if not keys or "cls_token" not in state_dict or "norm.weight" not in state_dict:
            raise WeightsError(f"{where}: not a DeiT/ViT-B checkpoint (no blocks.*, cls_token or norm.* keys).")
        last = max(int(k.split(".")[1]) for k in keys)
        wanted = {
            f"block.{k.removeprefix(f'blocks.{last}.')}": v
            for k, v in state_dict.items()
            if k.startswith(f"blocks.{last}.")
        }
        wanted["cls_token"] = state_dict["cls_token"]
        wanted.update({f"norm.{k.removeprefix('norm.')}": v for k, v in state_dict.items() if k.startswith("norm.")})
        own = self.state_dict()
        expected = {k for k in own if k.startswith(("block.", "norm.", "cls_token"))}
        if set(wanted) != expected or any(own[k].shape != v.shape for k, v in wanted.items()):
            raise WeightsError(
                f"{where}: last block/norm/cls_token do not match a ViT-B block (dim {DEIT_DIM}); "
                f"missing {sorted(expected - set(wanted))[:4]}, unexpected {sorted(set(wanted) - expected)[:4]}."
            )
        self.load_state_dict({**own, **wanted}, strict=True)


def deit_state_dict(head_weights: str | Path | None) -> tuple[dict[str, torch.Tensor], str]:
    """DeiT-B weights for the ``deit`` head: ``head_weights`` if given, else the published deit_base checkpoint."""
    path, _ = resolve_weights(DEIT_BACKBONE, head_weights)
    if path is None:  # pragma: no cover - the entry always has a location
        raise WeightsError(f"no weights for {DEIT_BACKBONE}; pass --head-weights PATH.")
    state_dict = read_checkpoint(path, DEIT_BACKBONE)
    state_dict = {k.removeprefix("model."): v for k, v in state_dict.items()}
    return state_dict, str(path)


def make_head(
    kind: str, in_dim: int, num_outputs: int, head: Head | str = Head.small, head_weights: str | Path | None = None
) -> nn.Module:
    if kind != "attention":
        return LinearHead(in_dim, num_outputs)
    if Head(head) is Head.deit:
        try:
            state_dict, where = deit_state_dict(head_weights)
        except WeightsError as err:
            raise WeightsError(
                f"--head deit needs DeiT-B weights: {err} Pass --head-weights PATH to deit_base_patch16_224 "
                "model.safetensors (https://huggingface.co/timm/deit_base_patch16_224.fb_in1k), or use the default "
                "--head small."
            ) from None
        module = DeitBlockHead(in_dim, num_outputs)
        module.load_deit(state_dict, where)
        return module
    return AttentionPoolHead(in_dim, num_outputs)

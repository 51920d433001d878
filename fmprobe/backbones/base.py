"""What a backbone is to fmprobe: a frozen record of *data* (timm's pretrained-cfg idea) plus a builder.

Preprocessing, readouts, native resolution, where the weights are published and under which licence all live
in one :class:`BackboneSpec`, so the transform follows the weights (open_clip's rule) and nothing downstream
dispatches on substrings of names.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from fmprobe.backbones.records import (  # noqa: F401  (the data records, torch-free, re-exported)
    CLIP_MEAN,
    CLIP_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    PackageFile,
    Preprocess,
    ResizeMode,
    WeightsInfo,
)
from fmprobe.registry import Registry

GroupMatcher = dict[str, object]  # timm's convention: {"stem": regex, "blocks": regex | [(regex, ordinal | None)]}
TAIL_ORDINAL = 99999  # timm's ordinal for what comes after the last block (final norm, conv head)


@dataclass(frozen=True)
class BlockGroups:
    """A backbone's parameter names (as ``FeatureModel.named_parameters`` gives them) in forward order:
    everything before the first block, one tuple per block, everything after the last block. Fine-tuning's
    ``partial:K`` trains the last K blocks and the tail; layer decay scales the learning rate by depth."""

    stem: tuple[str, ...]
    blocks: tuple[tuple[str, ...], ...]
    tail: tuple[str, ...]


def prefixed_matcher(matcher: GroupMatcher, prefix: str) -> GroupMatcher:
    """timm's ``group_matcher`` of a wrapped network, re-anchored under ``prefix`` (e.g. ``'model.'``): timm
    matches with ``re.match``, so ``'^a|b'`` means "starts with a or b" and becomes ``'^model\\.(?:a|b)'``."""

    def anchor(pattern: str) -> str:
        return f"^{re.escape(prefix)}(?:{pattern.removeprefix('^')})"

    out: GroupMatcher = {}
    for key, value in matcher.items():
        if isinstance(value, str):
            out[key] = anchor(value)
        else:
            out[key] = [(anchor(p), ordinal) for p, ordinal in value]  # type: ignore[union-attr]
    return out


def groups_from_matcher(names: list[str], matcher: GroupMatcher) -> BlockGroups:
    """Split ``names`` into stem / blocks / tail with a coarse timm ``group_matcher`` (one group per block)."""

    def patterns(value: object) -> list[tuple[re.Pattern[str], object]]:
        if isinstance(value, str):
            return [(re.compile(value), None)]
        return [(re.compile(p), o) for p, o in value]  # type: ignore[union-attr]

    stem_patterns = [p for key in matcher if key != "blocks" for p, _ in patterns(matcher[key])]
    block_patterns = patterns(matcher.get("blocks", []))
    stem: list[str] = []
    tail: list[str] = []
    blocks: dict[tuple[int, ...], list[str]] = {}
    for name in names:
        if any(p.match(name) for p in stem_patterns):
            stem.append(name)
            continue
        for pattern, ordinal in block_patterns:
            if m := pattern.match(name):
                if ordinal is not None and TAIL_ORDINAL in tuple(ordinal):  # type: ignore[arg-type]
                    tail.append(name)
                else:
                    blocks.setdefault(tuple(int(g) for g in m.groups() if g is not None), []).append(name)
                break
        else:
            tail.append(name)  # timm too puts what no pattern names after the blocks
    return BlockGroups(tuple(stem), tuple(tuple(blocks[k]) for k in sorted(blocks)), tuple(tail))


class FeatureModel(nn.Module):
    """A frozen network that maps a batch of images to one embedding per readout.

    Subclasses implement :meth:`forward_readouts`. Embedding widths are read from the model (one dummy forward)
    rather than declared, so a new variant can never disagree with its entry.

    Fine-tuning uses two more views of the network, so that every family supports every setting:
    :meth:`tokens` (the patch tokens the attention head reads) and :meth:`group_matcher` /
    :meth:`block_groups` (the blocks ``partial:K`` unfreezes and layer decay scales). The defaults cover a timm
    network held as the attribute named by ``timm_attr`` (``self.model``); other families override them.
    """

    readouts: tuple[str, ...] = ()
    channels_last: bool = False
    timm_attr: str = "model"

    def _timm_network(self) -> nn.Module | None:
        net = getattr(self, self.timm_attr, None)
        return net if isinstance(net, nn.Module) and hasattr(net, "forward_features") else None

    def tokens(self, images: torch.Tensor) -> torch.Tensor:
        """Patch tokens ``[B, N, D]`` of the last block (after the final norm): prefix tokens (class, registers)
        dropped; a CNN's ``[B, C, H, W]`` map is flattened to ``H*W`` tokens."""
        net = self._timm_network()
        if net is None:
            raise NotImplementedError(f"{type(self).__name__} does not expose patch tokens")
        features = net.forward_features(images)
        if isinstance(features, (tuple, list)):
            features = features[0]
        if features.ndim == 4:
            if str(getattr(net, "output_fmt", "NCHW")) == "NHWC":
                return features.flatten(1, 2)
            return features.flatten(2).transpose(1, 2)
        prefix = int(getattr(net, "num_prefix_tokens", 0) or 0)
        return features[:, prefix:] if features.shape[1] > prefix else features

    def group_matcher(self, coarse: bool = False) -> GroupMatcher:
        """timm's ``group_matcher`` convention over this module's parameter names (timm's
        ``param_groups_layer_decay`` reads it); ``coarse`` gives one group per block."""
        net = self._timm_network()
        if net is None or not hasattr(net, "group_matcher"):
            raise NotImplementedError(f"{type(self).__name__} does not define its blocks")
        return prefixed_matcher(net.group_matcher(coarse=coarse), self.timm_attr + ".")

    def block_groups(self) -> BlockGroups:
        """Stem, blocks (input to output) and tail of this backbone, from :meth:`group_matcher` (coarse)."""
        return groups_from_matcher([n for n, _ in self.named_parameters()], self.group_matcher(coarse=True))

    def forward_readouts(self, images: torch.Tensor, readouts: tuple[str, ...]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def forward(self, images: torch.Tensor, readouts: tuple[str, ...]) -> dict[str, torch.Tensor]:
        return self.forward_readouts(images, readouts)

    @torch.inference_mode()
    def embed_dims(self, readouts: tuple[str, ...], size: int) -> dict[str, int]:
        device = next(self.parameters()).device
        out = self.forward_readouts(torch.zeros(1, 3, size, size, device=device), readouts)
        return {name: int(value.shape[-1]) for name, value in out.items()}


StateDict = dict[str, torch.Tensor]


@dataclass(frozen=True)
class BackboneSpec:
    """One registry entry. ``build(resolution)`` makes a randomly initialised :class:`FeatureModel`;
    ``filter_state_dict(sd, model)`` maps a checkpoint in the authors' layout onto it (then loaded strictly);
    ``weights`` says where the checkpoint is published (one generic locator finds it). ``imagenet_baseline``
    marks the study's supervised/self-supervised ImageNet baselines (the report's default reference)."""

    name: str
    family: str
    implementation: str
    build: Callable[[int], FeatureModel]
    preprocess: Preprocess
    readouts: tuple[str, ...]
    default_readout: str
    weights: WeightsInfo
    filter_state_dict: Callable[[StateDict, nn.Module], StateDict] | None = None
    description: str = ""
    paper: str = ""
    params_m: float | None = None
    imagenet_baseline: bool = False
    extra: dict[str, object] = field(default_factory=dict)
    # Upstream names of these weights (``vit_b`` for SAM's, ``ViT-B-16/laion2b_s34b_b88k``): they resolve to this
    # entry (one cache file), and `fmprobe models PATTERN` searches them.
    aliases: tuple[str, ...] = ()

    # Parametric readouts (e.g. r"block:\d+" for an intermediate block) beyond the listed ones.
    readout_patterns: tuple[str, ...] = ()

    @property
    def native_resolution(self) -> int:
        return self.preprocess.size

    def with_aliases(self, aliases: tuple[str, ...]) -> BackboneSpec:
        return replace(self, aliases=tuple(aliases))

    def supports(self, readout: str) -> bool:
        return readout in self.readouts or any(re.fullmatch(p, readout) for p in self.readout_patterns)


BACKBONES: Registry[BackboneSpec] = Registry(
    "backbone",
    "`fmprobe models` lists all of them; any timm model name, openclip:MODEL:TAG or hf:ORG/REPO works too.",
)
# Generic escapes without an entry: name prefix -> entry factory (each builds preprocessing from the model's config).
GENERIC_PREFIXES: dict[str, Callable[[str], BackboneSpec]] = {}


def register(spec: BackboneSpec) -> BackboneSpec:
    """Add ``spec`` to the registry under its name and aliases (a family file, or a plugin, calls this next to
    its builder)."""
    from fmprobe.backbones import catalog

    catalog.add_aliases(spec.name, spec.aliases)
    return BACKBONES.add(spec.name, spec)


def register_prefix(prefix: str, factory: Callable[[str], BackboneSpec]) -> None:
    """Declare a generic escape: names starting with ``prefix`` (e.g. ``'hf:'``) get ``factory(name)``."""
    if prefix in GENERIC_PREFIXES:
        raise ValueError(f"backbone prefix {prefix!r} is registered twice")
    GENERIC_PREFIXES[prefix] = factory
    from fmprobe.backbones import catalog

    catalog.RUNTIME_PREFIXES.add(prefix)

"""Backbone names read once, torch-free: ``NAME[:random[:SEED]]``, with ``NAME`` in its canonical form.

The canonical form (:func:`fmprobe.backbones.catalog.canonical`) is what caches, results and fingerprints use, so
an alias (``vit_b``) or another spelling (``hf_hub:``, ``timm:resnet50``) never makes a second cache file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from fmprobe.backbones.catalog import canonical, has_prefix
from fmprobe.errors import UnknownNameError

RANDOM = "random"  # the modifier of a randomly initialised control: NAME:random or NAME:random:SEED
MODIFIERS = (RANDOM,)
_RANDOM_SUFFIX = re.compile(rf"^(?P<base>.+):{RANDOM}(?::(?P<seed>[^:]*))?$")


@dataclass(frozen=True)
class BackboneName:
    """A backbone name read once: the registry name, whether it is the random control, and its seed.

    ``seed`` is None where the name does not write one (``NAME:random`` is seed 0 for extraction, the run's seed
    for fine-tuning, as before seeds could be written)."""

    base: str
    random_init: bool = False
    seed: int | None = None

    @property
    def canonical(self) -> str:
        """The name as caches and results spell it: ``NAME:random`` for seed 0 (so older caches stay valid)."""
        if not self.random_init:
            return self.base
        return f"{self.base}:{self.weights_label}"

    @property
    def weights_label(self) -> str:
        """How results rows name a random control's weights: ``random``, or ``random:SEED`` for a seed > 0."""
        return RANDOM if not self.seed else f"{RANDOM}:{self.seed}"

    def init_seed(self, default: int = 0) -> int:
        """The seed the initialisation uses: the name's, else ``default``."""
        return default if self.seed is None else self.seed


def parse_backbone(name: str) -> BackboneName:
    """``'resnet50:random:2'`` -> ``BackboneName('resnet50', True, 2)``; the one parser of backbone names.

    Generic names keep their own colons: ``openclip:ViT-B-16:laion2b_s34b_b88k`` -> (itself, not random),
    ``openclip:ViT-B-16:laion2b_s34b_b88k:random`` -> (``openclip:ViT-B-16:laion2b_s34b_b88k``, random)."""
    name = name.strip()
    parsed = BackboneName(name)
    if match := _RANDOM_SUFFIX.match(name):
        seed = match["seed"]
        if seed is not None and not seed.isdigit():
            raise UnknownNameError(
                f"bad seed {seed!r} in {name!r}: the seed of a random control is a non-negative integer, e.g. "
                f"{match['base']}:{RANDOM}:1 ({match['base']}:{RANDOM} is seed 0)."
            )
        parsed = BackboneName(match["base"], True, None if seed is None else int(seed))
    if not has_prefix(parsed.base) and ":" in parsed.base:
        modifier = parsed.base.partition(":")[2]
        raise UnknownNameError(
            f"unknown backbone modifier {modifier!r} in {name!r}; use NAME for pretrained weights or NAME:random "
            "(NAME:random:SEED for another initialisation) for the randomly initialised control."
        )
    return BackboneName(canonical(parsed.base), parsed.random_init, parsed.seed)


def parse_name(name: str) -> tuple[str, bool]:
    """``'resnet50:random'`` -> ``('resnet50', True)``: :func:`parse_backbone` without the seed."""
    parsed = parse_backbone(name)
    return parsed.base, parsed.random_init

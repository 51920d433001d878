"""The backbone registry: ``name[:random]``, one entry per backbone, any timm model name as an escape.

Adding a backbone family is one file plus one line: the family file builds its network, declares its entries
(:class:`BackboneSpec`, with where the weights are published as data) and calls ``register(spec)`` next to the
builder (``register_prefix`` for a generic ``prefix:...`` escape); the import line below registers them.
``create_backbone`` builds the network, finds and verifies the weights, and returns everything the cache
fingerprint needs (weights digest, preprocessing, resolution).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import timm
import torch

from fmprobe._io import __version__, atomic_write_text, user_cache_dir
from fmprobe.backbones.base import (
    BACKBONES,
    GENERIC_PREFIXES,
    BackboneSpec,
    FeatureModel,
    PackageFile,
    Preprocess,
    WeightsInfo,
    register,
    register_prefix,
)
from fmprobe.backbones.preprocess import ImageTransform
from fmprobe.backbones.weights import filter_checkpoint, load_strict, locate_weights, read_checkpoint, sha256_file
from fmprobe.errors import UnknownNameError, WeightsError

# One line per family, in the order `fmprobe models` lists them (the study's families first).
# isort: off
from fmprobe.backbones import efficientnet_lite  # noqa: F401
from fmprobe.backbones import timm_models
from fmprobe.backbones import dinov2  # noqa: F401
from fmprobe.backbones import openclip  # noqa: F401
from fmprobe.backbones import sam  # noqa: F401
from fmprobe.backbones import seem  # noqa: F401
from fmprobe.backbones import blip  # noqa: F401
from fmprobe.backbones import rad_dino  # noqa: F401
from fmprobe.backbones import mae  # noqa: F401
from fmprobe.backbones import sam2  # noqa: F401
from fmprobe.backbones import aimv2  # noqa: F401
from fmprobe.backbones import dinov3  # noqa: F401
from fmprobe.backbones import hf_auto  # noqa: F401
# isort: on

__all__ = [
    "BACKBONES", "BackboneSpec", "FeatureModel", "ImageTransform", "LoadedBackbone", "PackageFile", "Preprocess",
    "WeightsInfo", "BackboneName", "create_backbone", "describe_shapes", "get_spec", "imagenet_baselines", "list_models",
    "parse_backbone", "parse_name", "register", "register_prefix", "resolve_weights", "weights_label",
]  # fmt: skip

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
    if not parsed.base.startswith(tuple(GENERIC_PREFIXES)) and ":" in parsed.base:
        modifier = parsed.base.partition(":")[2]
        raise UnknownNameError(
            f"unknown backbone modifier {modifier!r} in {name!r}; use NAME for pretrained weights or NAME:random "
            "(NAME:random:SEED for another initialisation) for the randomly initialised control."
        )
    return parsed


def parse_name(name: str) -> tuple[str, bool]:
    """``'resnet50:random'`` -> ``('resnet50', True)``: :func:`parse_backbone` without the seed."""
    parsed = parse_backbone(name)
    return parsed.base, parsed.random_init


def get_spec(base: str) -> BackboneSpec:
    """A registered entry, or an entry made on the fly for any timm model name, ``openclip:...`` or ``hf:...``."""
    if base in BACKBONES:
        return BACKBONES.get(base)
    for prefix, factory in GENERIC_PREFIXES.items():
        if base.startswith(prefix):
            return factory(base)
    if timm.is_model(base):
        return timm_models.timm_entry(base)
    raise BACKBONES.unknown(base, extra_choices=timm.list_models())


@dataclass
class LoadedBackbone:
    """A ready, frozen network plus the facts that identify its features."""

    name: str
    spec: BackboneSpec
    model: FeatureModel
    random_init: bool
    weights_path: Path | None
    weights_digest: str
    resolution: int
    preprocess: Preprocess

    def transform(self) -> ImageTransform:
        return ImageTransform(self.preprocess)


def resolve_weights(name: str, weights: str | Path | None = None, seed: int = 0) -> tuple[Path | None, str]:
    """The weights file ``name`` will load (None for a random control) and its digest for the cache key.

    A random control's digest names its seed: the one in the name (``NAME:random:SEED``), else ``seed``."""
    parsed = parse_backbone(name)
    base = parsed.base
    spec = get_spec(base)
    if parsed.random_init:
        if weights is not None:
            raise WeightsError(f"{name!r} is the randomly initialised control; drop --weights or drop ':random'.")
        return None, f"random-init:seed{parsed.init_seed(seed)}:torch{torch.__version__}:timm{timm.__version__}"
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise WeightsError(f"weights file {path} for {name!r} not found. Check the --weights path.")
    else:
        path = locate_weights(spec.weights, base)
    return path, "sha256:" + sha256_file(path)


def weights_label(weights: str | Path | None, resolved: tuple[Path | None, str], name: str = "") -> str:
    """How the results table names the weights: random (``random:SEED`` for a seed > 0 written in ``name``),
    pretrained (the published file), or the file used."""
    if resolved[0] is None:
        return parse_backbone(name).weights_label if name else RANDOM
    if weights is None:
        return "pretrained"
    return f"{Path(weights).name}@{resolved[1].removeprefix('sha256:')[:8]}"


def create_backbone(
    name: str,
    weights: str | Path | None = None,
    resolution: int | None = None,
    seed: int = 0,
    resolved: tuple[Path | None, str] | None = None,
) -> LoadedBackbone:
    """Build ``name`` at ``resolution`` with its published weights (or ``weights``), frozen and in eval mode.

    ``resolved`` passes the result of :func:`resolve_weights` when the caller already hashed the file. A random
    control is initialised with the seed its name writes (``NAME:random:SEED``), else with ``seed``.
    """
    parsed = parse_backbone(name)
    spec = get_spec(parsed.base)
    weights_path, digest = resolved or resolve_weights(name, weights, seed)
    size = int(resolution or spec.native_resolution)
    if size < 16 or size > 4096:
        raise WeightsError(f"resolution {size} for {name!r} is out of range (16-4096).")
    torch.manual_seed(parsed.init_seed(seed))  # random controls are reproducible
    model = spec.build(size)
    if weights_path is not None:
        state_dict, source = read_checkpoint(weights_path, name), f"{weights_path} (for {name})"
        if spec.filter_state_dict is not None:
            state_dict = filter_checkpoint(spec.filter_state_dict, state_dict, model, source)
        load_strict(model, state_dict, source)
    model.eval().requires_grad_(False)
    return LoadedBackbone(
        name=name,
        spec=spec,
        model=model,
        random_init=parsed.random_init,
        weights_path=weights_path,
        weights_digest=digest,
        resolution=size,
        preprocess=spec.preprocess.at(size),
    )


def imagenet_baselines() -> list[str]:
    """The registered ImageNet baselines (``BackboneSpec.imagenet_baseline``), in registry order."""
    return [name for name, spec in BACKBONES.items() if spec.imagenet_baseline]


def describe_shapes(spec: BackboneSpec, size: int | None = None) -> tuple[dict[str, int], float]:
    """Embedding width per readout and parameter count (millions), from a shape-only build on the meta device."""
    size = size or spec.native_resolution
    with torch.device("meta"):
        model = spec.build(size)
        out = model.forward_readouts(torch.empty(1, 3, size, size), spec.readouts)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    return {k: int(v.shape[-1]) for k, v in out.items()}, params


def _shape_cache() -> Path:
    return user_cache_dir() / f"shapes-fmprobe{__version__}-timm{timm.__version__}-torch{torch.__version__}.json"


def list_models() -> list[dict[str, object]]:
    """One row per registered backbone (what ``fmprobe models`` prints).

    Widths and parameter counts come from a shape-only build of every entry (seconds each for the large ones),
    so they are remembered per fmprobe/timm/torch version in the user cache."""
    import contextlib
    import json

    cache_file = _shape_cache()
    try:
        known = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        known = {}
    rows = []
    for name, spec in BACKBONES.items():
        if name in known:
            dims, params = known[name]["dims"], known[name]["params"]
        else:
            try:
                dims, params = describe_shapes(spec)
                known[name] = {"dims": dims, "params": params}
            except Exception:  # a family that cannot trace on meta still gets listed
                dims, params = {}, spec.params_m
        rows.append(
            {
                "name": name,
                "family": spec.family,
                "implementation": spec.implementation,
                "params_m": round(params, 2) if params else None,
                "resolution": spec.native_resolution,
                "readouts": ", ".join(f"{r}{'*' if r == spec.default_readout else ''}={dims.get(r, '?')}" for r in spec.readouts),
                "weights": spec.weights.describe(),
                "license": spec.weights.license,
            }
        )
    with contextlib.suppress(OSError):
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(cache_file, json.dumps(known), fsync=False)
    return rows

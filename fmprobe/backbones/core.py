"""The backbone registry (the torch side): ``name[:random]``, one entry per backbone, any timm model name as an
escape. :mod:`fmprobe.backbones` exposes it lazily; :mod:`fmprobe.backbones.catalog` has the same entries as data.

Adding a backbone family is one file plus one line: the family file builds its network, declares its entries
(:class:`BackboneSpec`, with where the weights are published as data) and calls ``register(spec)`` next to the
builder (``register_prefix`` for a generic ``prefix:...`` escape); the import line below registers them. Installed
plugins (entry points of the group ``fmprobe.backbones``) are loaded after the package's own families.
``create_backbone`` builds the network, finds and verifies the weights, and returns everything the cache
fingerprint needs (weights digest, preprocessing, resolution).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import timm
import torch

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
from fmprobe.backbones.catalog import canonical, plugins, unknown_backbone
from fmprobe.backbones.names import RANDOM, BackboneName, parse_backbone, parse_name
from fmprobe.backbones.places import in_folder
from fmprobe.backbones.preprocess import ImageTransform
from fmprobe.backbones.weights import filter_checkpoint, load_strict, locate_weights, read_checkpoint, sha256_file
from fmprobe.errors import WeightsError

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
    "WeightsInfo", "BackboneName", "create_backbone", "describe_shapes", "get_spec", "imagenet_baselines",
    "load_plugins", "parse_backbone", "parse_name", "register", "register_prefix", "resolve_weights", "weights_label",
]  # fmt: skip

log = logging.getLogger(__name__)


def load_plugins() -> list[str]:
    """Load every installed ``fmprobe.backbones`` entry point: a module that calls ``register`` when imported, or
    a callable, called once with no arguments. A broken plugin is reported once and skipped (the package's own
    backbones keep working). Returns the names of the plugins loaded."""
    loaded = []
    for point in plugins():
        try:
            obj = point.load()  # type: ignore[attr-defined]
            if callable(obj):
                obj()
            loaded.append(point.name)  # type: ignore[attr-defined]
        except Exception as err:  # any failure of third-party code: say which plugin, keep going
            log.warning(f"backbone plugin {point.name!r} ({point.value}) failed to load: {type(err).__name__}: {err}")  # type: ignore[attr-defined]
    return loaded


def get_spec(base: str) -> BackboneSpec:
    """A registered entry (or an alias of one), or an entry made on the fly for any timm model name,
    ``timm:...``, ``hf-hub:...``, ``openclip:...`` or ``hf:...``."""
    base = canonical(base)
    if base in BACKBONES:
        return BACKBONES.get(base)
    for prefix, factory in GENERIC_PREFIXES.items():
        if base.startswith(prefix):
            return factory(base)
    if timm.is_model(base):
        return timm_models.timm_entry(base)
    raise unknown_backbone(base, list(timm.list_models()))


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
        path = _weights_path(Path(weights), spec, name)
    else:
        path = locate_weights(spec.weights, base)
    return path, "sha256:" + sha256_file(path)


def _weights_path(path: Path, spec: BackboneSpec, name: str) -> Path:
    """``--weights`` names the file, or a folder holding a published file (a release file by name, a Hub file as
    ``ORG/REPO/FILE``)."""
    if path.is_dir():
        found = in_folder(spec.weights, path)
        if found is None:
            wanted = [*spec.weights.release_files(), *(f"{r}/{f}" for r, f in spec.weights.hf)]
            raise WeightsError(f"--weights {path} for {name!r}: the folder has none of {', '.join(wanted) or 'its files'}.")
        return found
    if not path.is_file():
        raise WeightsError(f"weights file {path} for {name!r} not found. Check the --weights path.")
    return path


def weights_label(weights: str | Path | None, resolved: tuple[Path | None, str], name: str = "") -> str:
    """How the results table names the weights: random (``random:SEED`` for a seed > 0 written in ``name``),
    pretrained (the published file), or the file used."""
    if resolved[1].startswith(MODULE_DIGEST):
        return f"module@{resolved[1].removeprefix(MODULE_DIGEST)[:8]}"
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

    One call gives a ready feature extractor and the facts that identify its features (weights digest,
    preprocessing, resolution), so that ``extract_features`` can cache them under a key that changes whenever
    the features would. Published weights are looked for on disk first (``FMPROBE_WEIGHTS``, the torch hub and
    Hugging Face caches), downloaded only where that is allowed (not with ``HF_HUB_OFFLINE=1`` or
    ``FMPROBE_OFFLINE=1``), and loaded strictly: a checkpoint that does not fit the network is refused, never
    partially loaded.

    Parameters
    ----------
    name : str
        A backbone name (see :func:`check_backbone_name` for the forms); ``NAME:random`` or
        ``NAME:random:SEED`` builds the randomly initialised control, loading no weights.
    weights : str or Path or None, optional
        A checkpoint file (or folder holding it) to load instead of the published weights.
    resolution : int or None, optional
        Input size in pixels (16-4096); None uses the backbone's native resolution.
    seed : int, optional
        Initialisation seed of a random control whose name does not write one.
    resolved : tuple of (Path or None, str), optional
        The result of :func:`resolve_weights` when the caller already located and hashed the file (hashing a
        large checkpoint twice is slow).

    Returns
    -------
    LoadedBackbone
        ``model`` (a frozen :class:`FeatureModel`, ``model(images, readouts)`` gives a dict readout -> ``[B, D]``),
        ``spec``, ``weights_path``, ``weights_digest``, ``resolution``, ``preprocess`` and ``transform()``.

    Raises
    ------
    UnknownNameError
        Nothing resolves ``name``, or its ``:random`` seed is malformed.
    WeightsError
        The weights are not found (the message says where to download them and how to pass ``weights``), do
        not fit the network, ``weights`` is given for a random control, or ``resolution`` is out of range.

    Examples
    --------
    >>> import torch
    >>> from fmprobe import create_backbone
    >>> backbone = create_backbone("dinov2_vits14:random", resolution=56)  # doctest: +SKIP
    >>> backbone.weights_path, backbone.spec.default_readout  # doctest: +SKIP
    (None, 'cls')
    >>> out = backbone.model(torch.zeros(1, 3, 56, 56), ("cls", "mean_patch"))  # doctest: +SKIP
    >>> {k: tuple(v.shape) for k, v in out.items()}  # doctest: +SKIP
    {'cls': (1, 384), 'mean_patch': (1, 384)}
    >>> create_backbone("dinov2_vits14", weights="dinov2_vits14_pretrain.pth")  # doctest: +SKIP
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
    """The registered ImageNet baselines (``BackboneSpec.imagenet_baseline``), in registry order.

    A foundation model's score means little without the plain ImageNet-pretrained networks it should beat on
    the same data: features extracted from these (with their published weights) are marked, and the report
    compares against them by default. An entry (or a plugin's) joins them by setting ``imagenet_baseline=True``
    on its spec, so the list is derived, never kept by hand.

    Returns
    -------
    list of str
        Registered backbone names, in the order ``fmprobe models`` lists them.

    Examples
    --------
    >>> from fmprobe import imagenet_baselines
    >>> imagenet_baselines()  # doctest: +SKIP
    ['efficientnet_lite0_imagenet', 'resnet50_imagenet', 'resnet152_imagenet', 'deit_base_imagenet', 'dino_vitb16_imagenet']
    """
    return [name for name, spec in BACKBONES.items() if spec.imagenet_baseline]


def describe_shapes(spec: BackboneSpec, size: int | None = None, exact: bool = False) -> tuple[dict[str, int], float]:
    """Embedding width per readout and parameter count (millions; ``exact``: the count itself), from a shape-only
    build on the meta device (what the catalog stores)."""
    size = size or spec.native_resolution
    with torch.device("meta"):
        model = spec.build(size)
        out = model.forward_readouts(torch.empty(1, 3, size, size), spec.readouts)
    params = sum(p.numel() for p in model.parameters())
    return {k: int(v.shape[-1]) for k, v in out.items()}, (params if exact else params / 1e6)


MODULE_DIGEST = "module:"  # the weights digest of a user's nn.Module (fmprobe.backbones.module)
load_plugins()

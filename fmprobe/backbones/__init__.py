"""The backbones: a registry of entries (``name[:random]``), any timm model name and the ecosystem's forms.

This package is light: names here are imported on first use (PEP 562), so ``fmprobe models``, the name check
(:func:`check_backbone_name`) and :func:`list_models` read the catalog (data, :mod:`fmprobe.backbones.catalog`)
without importing torch; ``create_backbone``, ``get_spec``, ``register`` and the rest load the registry
(:mod:`fmprobe.backbones.core`, which imports every family and the installed plugins).

From outside the package, a backbone is one :class:`BackboneSpec` passed to :func:`register` (in a notebook, or in
a plugin's module named by an entry point of the group ``fmprobe.backbones``); a ready ``torch.nn.Module`` goes
straight to ``fmprobe.extract_features(dataset, model=module, transform=..., name=...)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fmprobe._io import lazy_attributes

_CORE = (
    "BACKBONES", "BackboneSpec", "FeatureModel", "ImageTransform", "LoadedBackbone", "PackageFile", "Preprocess",
    "WeightsInfo", "create_backbone", "describe_shapes", "get_spec", "imagenet_baselines", "load_plugins",
    "register", "register_prefix", "resolve_weights", "weights_label", "GENERIC_PREFIXES",
)  # fmt: skip
_LAZY = {
    **{name: "fmprobe.backbones.core" for name in _CORE},
    **{name: "fmprobe.backbones.names" for name in ("BackboneName", "parse_backbone", "parse_name", "RANDOM")},
    **{name: "fmprobe.backbones.catalog" for name in ("check_backbone_name", "list_models", "canonical")},
    "module_backbone": "fmprobe.backbones.module",
}

if TYPE_CHECKING:  # pragma: no cover
    from fmprobe.backbones.catalog import canonical, check_backbone_name, list_models  # noqa: F401
    from fmprobe.backbones.core import (  # noqa: F401
        BACKBONES,
        GENERIC_PREFIXES,
        BackboneSpec,
        FeatureModel,
        ImageTransform,
        LoadedBackbone,
        PackageFile,
        Preprocess,
        WeightsInfo,
        create_backbone,
        describe_shapes,
        get_spec,
        imagenet_baselines,
        load_plugins,
        register,
        register_prefix,
        resolve_weights,
        weights_label,
    )
    from fmprobe.backbones.module import module_backbone  # noqa: F401
    from fmprobe.backbones.names import RANDOM, BackboneName, parse_backbone, parse_name  # noqa: F401

__getattr__ = lazy_attributes(__name__, _LAZY)
__all__ = sorted(_LAZY)


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])

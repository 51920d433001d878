"""Any ``torch.nn.Module`` as a backbone, from Python: ``extract_features(dataset, model=net, transform=..., name=...)``.

The module maps a normalised image batch ``[B, 3, S, S]`` to one embedding ``[B, D]`` (readout ``output``), to a
dict of named embeddings (one readout each), or is a :class:`~fmprobe.backbones.base.FeatureModel` already. Its
features are cached like any backbone's: the weights digest is a SHA-256 of its class and state dict (names,
dtypes, shapes and bytes), so changed weights never serve stale features. The module is put in eval mode and
frozen in place (as a registered backbone is).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import fields

import torch
from torch import nn

from fmprobe.backbones.base import BackboneSpec, FeatureModel, Preprocess, WeightsInfo
from fmprobe.backbones.catalog import aliases, entries, has_prefix
from fmprobe.backbones.core import MODULE_DIGEST, LoadedBackbone
from fmprobe.backbones.preprocess import ImageTransform
from fmprobe.errors import FmprobeError

log = logging.getLogger(__name__)
OUTPUT = "output"  # the readout of a module that returns one tensor


class ModuleFeatures(FeatureModel):
    """A user's module behind the readout interface (held as ``net``)."""

    def __init__(self, net: nn.Module, readouts: tuple[str, ...]) -> None:
        super().__init__()
        self.net = net
        self.readouts = readouts

    def forward_readouts(self, images: torch.Tensor, readouts: tuple[str, ...]) -> dict[str, torch.Tensor]:
        out = self.net(images)
        values = out if isinstance(out, dict) else {OUTPUT: out}
        return {name: values[name].flatten(1) for name in readouts}


def state_digest(model: nn.Module) -> str:
    """SHA-256 over the class name and every state-dict entry (name, dtype, shape, bytes), in name order."""
    h = hashlib.sha256(f"{type(model).__module__}.{type(model).__qualname__}".encode())
    for key, tensor in sorted(model.state_dict().items()):
        if tensor.is_meta:
            raise FmprobeError(f"model={type(model).__name__}: {key} is on the meta device; load real weights first.")
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        h.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        h.update(flat.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def as_preprocess(transform: object, name: str) -> Preprocess:
    """``transform`` as fmprobe's :class:`Preprocess`: one, an :class:`ImageTransform`, a dict of its fields, or
    timm's data config (``timm.data.resolve_data_config``: ``input_size``, ``crop_pct``, ...). None: ImageNet
    mean/std at 224 px, said once. Anything else (a torchvision pipeline) is refused: it cannot be fingerprinted."""
    if transform is None:
        log.info(f"{name}: no transform given; ImageNet mean/std, 224 px, bicubic resize + centre crop assumed")
        return Preprocess(size=224, crop_pct=0.875)
    if isinstance(transform, Preprocess):
        return transform
    if isinstance(transform, ImageTransform):
        return transform.config
    if isinstance(transform, dict):
        known = {f.name for f in fields(Preprocess)}
        data = dict(transform)
        if "input_size" in data:  # timm's data config
            data["size"] = int(data.pop("input_size")[-1])
        data = {k: tuple(v) if k in ("mean", "std") else v for k, v in data.items() if k in known}
        if "size" in data:
            return Preprocess(**data)
    raise FmprobeError(
        f"transform={type(transform).__name__} for {name!r}: give a fmprobe.backbones.Preprocess (size, crop_pct, "
        "interpolation, mean, std, resize_mode), a dict of those fields, or timm's resolve_data_config(model=...) "
        "dict; a torchvision pipeline cannot be cached and fingerprinted."
    )


def _readouts(model: nn.Module, size: int) -> tuple[str, ...]:
    """The readouts the module produces, from one forward pass on a zero image."""
    if isinstance(model, FeatureModel) and model.readouts:
        return tuple(model.readouts)
    param = next(iter(model.parameters()), None)
    with torch.inference_mode():
        out = model(torch.zeros(1, 3, size, size, device=param.device if param is not None else "cpu"))
    if isinstance(out, dict):
        return tuple(out)
    if not isinstance(out, torch.Tensor):
        raise FmprobeError(f"model={type(model).__name__} returned {type(out).__name__}; return a tensor [B, D] or a dict of them.")
    return (OUTPUT,)


def check_module_name(name: str | None, model: nn.Module) -> str:
    """The name the features are cached and reported under: given, plain, and not a name fmprobe resolves."""
    if not name:
        raise FmprobeError(f"model={type(model).__name__}: pass name='...' (the name its features are cached and reported under).")
    if ":" in name or "/" in name or name in entries() or name in aliases() or has_prefix(name):
        raise FmprobeError(f"name={name!r} for a module is a registered backbone name or one of the name forms (':' and '/' are taken); choose another name.")
    return name


def module_backbone(model: nn.Module, name: str | None, transform: object = None, resolution: int | None = None) -> LoadedBackbone:
    """A user's module, frozen, as the :class:`LoadedBackbone` an extraction runs (its spec, digest, preprocessing)."""
    if not isinstance(model, nn.Module):
        raise FmprobeError(f"model={type(model).__name__}: expected a torch.nn.Module.")
    name = check_module_name(name, model)
    preprocess = as_preprocess(transform, name)
    size = int(resolution or preprocess.size)
    model.eval().requires_grad_(False)
    readouts = _readouts(model, size)
    wrapped = model if isinstance(model, FeatureModel) else ModuleFeatures(model, readouts)
    spec = BackboneSpec(
        name=name, family="module", implementation=f"{type(model).__module__}.{type(model).__qualname__}",
        build=lambda _size: wrapped, preprocess=preprocess, readouts=readouts, default_readout=readouts[0],
        weights=WeightsInfo(note="a module passed from Python"), description=f"nn.Module {type(model).__name__}",
    )  # fmt: skip
    return LoadedBackbone(name, spec, wrapped, False, None, MODULE_DIGEST + state_digest(model), size, preprocess.at(size))

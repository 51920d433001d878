"""Any Hugging Face vision model as ``hf:ORG/REPO`` (or ``hf:/path/to/saved/model``), on transformers itself.

The architecture comes from the repo's ``config.json`` (``AutoConfig``; for image-text models such as CLIP or
SigLIP only the image tower is built, with its projection where transformers has one), the preprocessing from
its ``preprocessor_config.json`` (mean, std, resample, resize and crop sizes), the weights from its
``model.safetensors`` (or ``pytorch_model.bin``, read weights-only). transformers renames old checkpoint layouts
at load time, so :func:`filter_state_dict` lets transformers itself map the file onto the architecture
(``from_pretrained(state_dict=...)``) and refuses any missing or mis-shaped weight; only another tower's
entries (e.g. the text model of a CLIP checkpoint) are left out.

Readouts (those the model produces): ``embedding`` (projected image embedding), ``pooled`` (``pooler_output``),
``cls`` (first token of ``last_hidden_state``), ``mean_patch`` (mean of the patch tokens, prefix tokens excluded).
Default: the first of these that exists.
"""

from __future__ import annotations

import inspect
import json
import re
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

from fmprobe.backbones.base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    BackboneSpec,
    FeatureModel,
    GroupMatcher,
    Preprocess,
    StateDict,
    WeightsInfo,
    register_prefix,
)
from fmprobe.backbones.weights import cached_hf_file, downloads_disabled
from fmprobe.errors import UnknownNameError, WeightsError

PREFIX = "hf:"
ORDER = ("embedding", "pooled", "cls", "mean_patch")
RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}  # PIL resample codes
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


class HfVisionFeatures(FeatureModel):
    def __init__(self, model: nn.Module, readouts: tuple[str, ...], patch_size: int | None, native: int) -> None:
        super().__init__()
        self.model = model
        self.readouts = readouts
        self.patch_size = patch_size
        self.native = native
        params = inspect.signature(model.forward).parameters
        self.can_interpolate = "interpolate_pos_encoding" in params

    def forward_readouts(self, images: torch.Tensor, readouts: tuple[str, ...]) -> dict[str, torch.Tensor]:
        kwargs = {"interpolate_pos_encoding": True} if self.can_interpolate and images.shape[-1] != self.native else {}
        out = self.model(pixel_values=images, **kwargs)
        values: dict[str, torch.Tensor] = {}
        if getattr(out, "image_embeds", None) is not None:
            values["embedding"] = out.image_embeds
        if getattr(out, "pooler_output", None) is not None:
            pooled = out.pooler_output
            values["pooled"] = pooled.flatten(1) if pooled.ndim > 2 else pooled
        hidden = getattr(out, "last_hidden_state", None)
        if hidden is not None and hidden.ndim == 3:
            prefix = self._num_prefix(hidden, images)
            if prefix:
                values["cls"] = hidden[:, 0]
            values["mean_patch"] = hidden[:, prefix:].mean(dim=1)
        elif hidden is not None and hidden.ndim == 4:  # convolutional: B, C, H, W
            values["mean_patch"] = hidden.mean(dim=(2, 3))
        missing = [r for r in readouts if r not in values]
        if missing:
            raise UnknownNameError(f"readout {missing[0]!r} is not produced by this model; available: {', '.join(values)}.")
        return {name: values[name] for name in readouts}


    def _num_prefix(self, hidden: torch.Tensor, images: torch.Tensor) -> int:
        """Tokens before the patch tokens (class, distillation, registers): what the patch grid does not explain."""
        if not self.patch_size:
            return 0
        n_patches = (images.shape[-2] // self.patch_size) * (images.shape[-1] // self.patch_size)
        return max(hidden.shape[1] - n_patches, 0)

    def tokens(self, images: torch.Tensor) -> torch.Tensor:
        """``last_hidden_state``'s patch tokens ``[B, N, D]`` (prefix tokens dropped; a conv map flattened)."""
        kwargs = {"interpolate_pos_encoding": True} if self.can_interpolate and images.shape[-1] != self.native else {}
        hidden = self.model(pixel_values=images, **kwargs).last_hidden_state
        if hidden.ndim == 4:  # B, C, H, W
            return hidden.flatten(2).transpose(1, 2)
        return hidden[:, self._num_prefix(hidden, images) :]

    def _block_list(self) -> str:
        """The name of the module list holding the model's blocks: the one with the most parameters
        (``encoder.layer`` of a ViT, ``vision_model.encoder.layers`` of CLIP, ``encoder.stages`` of a ConvNet)."""
        lists = [(sum(p.numel() for p in m.parameters()), name) for name, m in self.named_modules()
                 if isinstance(m, nn.ModuleList) and len(m) >= 2]  # fmt: skip
        if not lists:
            raise NotImplementedError(f"{type(self.model).__name__} has no list of blocks")
        return max(lists, key=lambda item: item[0])[1]

    def group_matcher(self, coarse: bool = False) -> GroupMatcher:
        """The block list's entries are the blocks; parameters registered before it (embeddings) are the stem,
        those after it (final norm, pooler, projection) the tail (transformers registers modules in forward order)."""
        blocks = self._block_list()
        names = [n for n, _ in self.named_parameters()]
        first = next(i for i, n in enumerate(names) if n.startswith(blocks + "."))
        stem = "|".join(re.escape(n) + "$" for n in names[:first]) or "$^"
        return {"stem": f"^(?:{stem})", "blocks": [(rf"^{re.escape(blocks)}\.(\d+)\.", None)]}


def _tower(config: object) -> tuple[type, object, bool]:
    """The transformers class to build, its config, and whether it is one tower of a composite model."""
    import copy

    import transformers
    from transformers import AutoModel

    vision = getattr(config, "vision_config", None)
    if vision is None:
        return AutoModel._model_mapping[type(config)], config, False
    stem = type(vision).__name__.removesuffix("VisionConfig")
    with_projection = getattr(transformers, f"{stem}VisionModelWithProjection", None)
    if with_projection is not None and getattr(config, "projection_dim", None) and hasattr(vision, "projection_dim"):
        vision = copy.deepcopy(vision)
        vision.projection_dim = config.projection_dim  # the image projection's width lives in the composite config
        return with_projection, vision, True
    return AutoModel._model_mapping[type(vision)], vision, True


def _read_json(ident: str, filename: str, local: Path | None) -> dict | None:
    if local is not None:
        path = local / filename
        return json.loads(path.read_text()) if path.is_file() else None
    from huggingface_hub import hf_hub_download

    path = cached_hf_file(ident, filename)
    if path is None and not downloads_disabled():
        try:
            path = Path(hf_hub_download(ident, filename))
        except Exception:  # the repo has no such file, or the hub is unreachable
            return None
    return json.loads(path.read_text()) if path is not None else None


def _preprocess(cfg: dict | None, image_size: int) -> tuple[Preprocess, str]:
    if not cfg:
        return Preprocess(size=image_size, crop_pct=1.0), " (no preprocessor_config.json: ImageNet mean/std assumed)"
    size = cfg.get("size") or {}
    size = {"shortest_edge": size} if isinstance(size, int) else size
    crop = cfg.get("crop_size") or {}
    crop = {"height": crop, "width": crop} if isinstance(crop, int) else crop
    interpolation = RESAMPLE.get(int(cfg.get("resample", 3)), "bicubic")
    mean = tuple(cfg.get("image_mean", IMAGENET_MEAN))
    std = tuple(cfg.get("image_std", IMAGENET_STD))
    do_crop = bool(cfg.get("do_center_crop", False)) and crop
    if not cfg.get("do_resize", True):
        target, pct, mode = image_size, 1.0, "center_crop"
    elif "shortest_edge" in size:
        short = int(size["shortest_edge"])
        target = int(crop["height"]) if do_crop else short
        pct, mode = target / short, "center_crop"
    else:
        height = int(size.get("height", image_size))
        target = int(crop["height"]) if do_crop else height
        pct, mode = (target / height, "center_crop") if do_crop else (1.0, "squash")
    return Preprocess(size=target, crop_pct=pct, interpolation=interpolation, mean=mean, std=std, resize_mode=mode), ""  # type: ignore[arg-type]


def _load_config(ident: str, local: Path | None, name: str) -> object:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(str(local or ident), local_files_only=downloads_disabled() or local is not None)
    except Exception as err:
        where = "the folder" if local else "the local Hugging Face cache and the hub is unreachable (HF_HUB_OFFLINE=1)" if downloads_disabled() else "the hub"
        fetch = "" if local else f" To get it: `hf download {ident} config.json preprocessor_config.json model.safetensors`."
        raise WeightsError(f"{name!r}: cannot read config.json from {where} ({type(err).__name__}: {str(err).splitlines()[0][:200]}).{fetch}") from None


@lru_cache(maxsize=64)
def generic_entry(name: str) -> BackboneSpec:
    ident = name[len(PREFIX):]
    if not ident:
        raise UnknownNameError(f"{name!r}: give a Hugging Face model id, e.g. hf:facebook/dinov2-small or hf:/path/to/model")
    local = Path(ident).expanduser() if Path(ident).expanduser().is_dir() else None
    config = _load_config(ident, local, name)
    cls, cfg, is_tower = _tower(config)
    image_size = getattr(cfg, "image_size", 224)
    image_size = int(image_size[0] if isinstance(image_size, (list, tuple)) else image_size)
    preprocess, note = _preprocess(_read_json(ident, "preprocessor_config.json", local), image_size)
    patch = getattr(cfg, "patch_size", None)
    patch = int(patch[0] if isinstance(patch, (list, tuple)) else patch) if patch else None

    def build(resolution: int, readouts: tuple[str, ...] = ORDER) -> FeatureModel:
        return HfVisionFeatures(cls(cfg), readouts, patch, image_size)

    with torch.device("meta"):  # which readouts the model produces, from a shape-only forward
        produced = _produced(build(preprocess.size), preprocess.size)
    readouts = tuple(r for r in ORDER if r in produced)
    if not readouts:
        raise UnknownNameError(f"{name!r}: {cls.__name__} produces no image embedding fmprobe can read.")

    def build_final(resolution: int) -> FeatureModel:
        return build(resolution, readouts)

    def filter_fn(state_dict: StateDict, model: nn.Module) -> StateDict:
        return filter_state_dict(state_dict, model, cls, cfg, is_tower)

    if local is not None:
        weights = WeightsInfo(local=tuple(str(local / f) for f in WEIGHT_FILES))
    else:
        weights = WeightsInfo(hf=tuple((ident, f) for f in WEIGHT_FILES))
    return BackboneSpec(
        name=name,
        family="hf",
        implementation=f"transformers {cls.__name__}",
        build=build_final,
        preprocess=preprocess,
        readouts=readouts,
        default_readout=readouts[0],
        weights=weights,
        filter_state_dict=filter_fn,
        description=f"Hugging Face {ident} ({type(config).__name__}){note}",
    )


def _produced(model: HfVisionFeatures, size: int) -> list[str]:
    images = torch.empty(1, 3, size, size)
    names = []
    for readout in ORDER:
        try:
            model.forward_readouts(images, (readout,))
            names.append(readout)
        except UnknownNameError:
            pass
    return names


def filter_state_dict(state_dict: StateDict, model: nn.Module, cls: type, config: object, is_tower: bool) -> StateDict:
    """Let transformers map the checkpoint onto ``cls`` (its own renames), refusing missing or mis-shaped weights."""
    import logging

    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        loaded, info = cls.from_pretrained(None, config=config, state_dict=dict(state_dict), output_loading_info=True)
    except Exception as err:
        raise WeightsError(f"transformers could not load this checkpoint into {cls.__name__}: {type(err).__name__}: {err}") from None
    finally:
        hf_logging.set_verbosity(verbosity)
        logging.getLogger("transformers").setLevel(logging.WARNING)
    problems = []
    if info["missing_keys"]:
        problems.append(f"{len(info['missing_keys'])} missing keys (first: {', '.join(sorted(info['missing_keys'])[:4])})")
    if info["mismatched_keys"]:
        problems.append(f"{len(info['mismatched_keys'])} shape mismatches (first: {', '.join(str(k) for k in sorted(info['mismatched_keys'], key=str)[:3])})")
    if info["unexpected_keys"] and not is_tower:
        problems.append(f"{len(info['unexpected_keys'])} unexpected keys (first: {', '.join(sorted(info['unexpected_keys'])[:4])})")
    if problems:
        raise WeightsError(f"checkpoint does not match {cls.__name__}: {'; '.join(problems)}. Is it this model's checkpoint?")
    return {f"model.{k}": v for k, v in loaded.state_dict().items()}


register_prefix(PREFIX, generic_entry)

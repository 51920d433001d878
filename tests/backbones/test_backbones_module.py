"""Any nn.Module as a backbone from Python, fingerprinted by its state dict; plugins register from outside."""

from __future__ import annotations

import sys
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
import torch
from _helpers import make_images, write_manifest
from torch import nn

import fmprobe
from fmprobe.backbones import Preprocess, catalog
from fmprobe.errors import FmprobeError


class MyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.conv(images).mean(dim=(2, 3))


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    labels = ["a", "b"] * 6
    names = make_images(tmp_path / "imgs", labels, size=16)
    rows = [[f"imgs/{n}", lab, ("train", "val", "test")[min(i // 4, 2)]] for i, (n, lab) in enumerate(zip(names, labels))]
    return write_manifest(tmp_path / "m.csv", ["path", "label", "split"], rows)


def test_a_module_extracts_caches_and_is_keyed_by_its_weights(manifest: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = MyNet()
    kwargs = dict(model=net, transform=Preprocess(size=16, crop_pct=1.0), name="mynet", out=tmp_path / "f", progress=False, num_workers=0, device="cpu", dtype="fp32")
    first = fmprobe.extract_features(f"csv:{manifest}", **kwargs)
    again = fmprobe.extract_features(f"csv:{manifest}", **kwargs)
    assert not first.cache_hit and again.cache_hit and again.path == first.path
    features = fmprobe.FeatureFile(first.path)
    assert features.attrs["backbone"] == "mynet" and features.attrs["weights_label"].startswith("module@")
    with torch.no_grad():
        net.conv.bias.add_(1.0)
    changed = fmprobe.extract_features(f"csv:{manifest}", **kwargs)
    assert not changed.cache_hit and changed.key != first.key


def test_module_arguments_are_checked(manifest: Path, tmp_path: Path) -> None:
    with pytest.raises(FmprobeError, match="pass name="):
        fmprobe.plan_extraction(f"csv:{manifest}", model=MyNet(), out=tmp_path)
    with pytest.raises(FmprobeError, match="registered backbone name"):
        fmprobe.plan_extraction(f"csv:{manifest}", model=MyNet(), name="sam_vitb", out=tmp_path)
    with pytest.raises(FmprobeError, match="torchvision pipeline cannot be cached"):
        fmprobe.plan_extraction(f"csv:{manifest}", model=MyNet(), name="x", transform=lambda im: im, out=tmp_path)
    plan = fmprobe.plan_extraction(f"csv:{manifest}", MyNet(), name="x", transform={"input_size": (3, 20, 20), "crop_pct": 1.0}, out=tmp_path)
    assert plan.resolution == 20 and plan.readouts == ("output",) and plan.resolved[1].startswith("module:")


def test_an_entry_point_plugin_registers_a_backbone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fmprobe.backbones import BACKBONES, core

    (tmp_path / "fmprobe_test_plugin.py").write_text(
        "from _tinynet import SPEC\n"
        "from dataclasses import replace\n"
        "from fmprobe.backbones import register\n"
        "def register_all():\n"
        "    register(replace(SPEC, name='plugin_tinynet', aliases=('someone/plugin-tinynet',)))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    point = EntryPoint(name="plugin_tinynet", value="fmprobe_test_plugin:register_all", group=catalog.PLUGIN_GROUP)
    broken = EntryPoint(name="broken", value="no_such_module_xyz:register", group=catalog.PLUGIN_GROUP)
    monkeypatch.setattr(core, "plugins", lambda: [point, broken])
    try:
        assert core.load_plugins() == ["plugin_tinynet"]  # the broken one is reported and skipped
        assert fmprobe.backbones.get_spec("someone/plugin-tinynet").name == "plugin_tinynet"
        catalog.check_backbone_name("plugin_tinynet")
    finally:
        BACKBONES.remove("plugin_tinynet")
        catalog._RUNTIME_ALIASES.pop("someone/plugin-tinynet", None)
        catalog.canonical.cache_clear()
        sys.modules.pop("fmprobe_test_plugin", None)

"""Backbone registry core: the timm path (any timm name), names and modifiers, safe and strict weight loading."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from PIL import Image

from fmprobe.backbones import create_backbone, get_spec, parse_name, resolve_weights
from fmprobe.backbones.preprocess import ImageTransform
from fmprobe.errors import UnknownNameError, WeightsError


def test_transform_resizes_crops_and_normalises() -> None:
    t = ImageTransform(get_spec("efficientnet_lite0_imagenet").preprocess.at(64))
    out = t(Image.new("RGB", (100, 50), (255, 0, 128)))
    assert out.shape == (3, 64, 64)
    assert torch.allclose(out[:, 32, 32], torch.tensor([1.0, -1.0, 128 / 255 * 2 - 1]), atol=0.02)


def test_any_timm_name_builds_with_its_readouts() -> None:
    vit = create_backbone("vit_tiny_patch16_224:random", resolution=64)
    out = vit.model(torch.randn(2, 3, 64, 64), ("cls", "mean_patch", "cls_mean"))
    assert out["cls"].shape == (2, 192) and out["cls_mean"].shape == (2, 384)
    assert vit.spec.default_readout == "cls"
    cnn = create_backbone("resnet18:random")
    assert cnn.spec.readouts == ("pooled",) and cnn.model(torch.randn(1, 3, 32, 32), ("pooled",))["pooled"].shape == (1, 512)


def test_names_and_modifiers() -> None:
    assert parse_name("resnet50:random") == ("resnet50", True)
    with pytest.raises(UnknownNameError, match="modifier 'imagenet'"):
        parse_name("resnet50:imagenet")
    with pytest.raises(UnknownNameError, match="Closest: deit_base_imagenet"):
        get_spec("deit_base_imagnet")


def test_offline_without_weights_names_the_file_and_the_way_out(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(WeightsError) as info:
        resolve_weights("deit_base_imagenet")
    message = str(info.value)
    assert "HF_HUB_OFFLINE=1" in message and "model.safetensors" in message and "--weights" in message
    assert "timm/deit_base_patch16_224.fb_in1k" in message


def test_weights_file_checks(tmp_path: Path) -> None:
    model = create_backbone("resnet18:random").model
    good = tmp_path / "resnet18.safetensors"
    from safetensors.torch import save_file

    save_file({k.removeprefix("model."): v.contiguous() for k, v in model.state_dict().items()}, str(good))
    loaded = create_backbone("resnet18", weights=good)
    assert resolve_weights("resnet18", good)[1] == loaded.weights_digest
    with torch.inference_mode():
        assert torch.equal(loaded.model(torch.ones(1, 3, 32, 32), ("pooled",))["pooled"],
                           model(torch.ones(1, 3, 32, 32), ("pooled",))["pooled"])  # fmt: skip

    wrong = tmp_path / "wrong.pth"
    state = {k.removeprefix("model."): v for k, v in model.state_dict().items()}
    state["fc.weight"] = torch.zeros(3, 3)  # an extra classifier of the wrong shape is dropped by the filter...
    del state["layer1.0.conv1.weight"]  # ...but a missing backbone weight is refused by name
    torch.save(state, wrong)
    with pytest.raises(WeightsError, match=r"1 missing keys \(first: model\.layer1\.0\.conv1\.weight\)"):
        create_backbone("resnet18", weights=wrong)

    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps({"state_dict": {"x": Payload()}}))
    with pytest.raises(WeightsError, match="refused.*can run code"):
        create_backbone("resnet18", weights=evil)
    with pytest.raises(WeightsError, match="not found"):
        create_backbone("resnet18", weights=tmp_path / "nope.pth")
    with pytest.raises(WeightsError, match="random"):
        create_backbone("resnet18:random", weights=good)

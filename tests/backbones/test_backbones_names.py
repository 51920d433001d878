"""The ecosystem's names resolve to one canonical name (one cache file); unknown ones are refused with the fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fmprobe.backbones import catalog, resolve_weights
from fmprobe.backbones.names import parse_backbone
from fmprobe.backbones.places import WEIGHTS_ENV, found_where
from fmprobe.errors import UnknownNameError, WeightsError


@pytest.mark.parametrize(
    "name,canonical",
    [
        ("vit_b", "sam_vitb"),
        ("ViT-B-16/laion2b_s34b_b88k", "openclip_vitb16_laion2b"),
        ("openclip:ViT-B-16:laion2b_s34b_b88k", "openclip_vitb16_laion2b"),
        ("tf_efficientnet_lite0", "efficientnet_lite0_imagenet"),
        ("facebook/dinov2-base", "dinov2_vitb14"),
        ("resnet50.tv_in1k", "resnet50_imagenet"),
        ("timm:resnet50", "resnet50"),
        ("timm:tf_efficientnet_lite0", "timm:tf_efficientnet_lite0"),  # timm's own, not the alias
        ("hf_hub:timm/vit_tiny_patch16_224.augreg_in21k", "hf-hub:timm/vit_tiny_patch16_224.augreg_in21k"),
        ("someorg/somemodel", "hf:someorg/somemodel"),
        ("openclip:ViT-B-32:openai", "openclip:ViT-B-32:openai"),
    ],
)
def test_names_resolve_to_one_canonical_name(name: str, canonical: str) -> None:
    assert parse_backbone(name).base == canonical
    assert parse_backbone(f"{name}:random:3").canonical == f"{canonical}:random:3"


def test_unknown_names_are_refused_with_the_form_that_works() -> None:
    with pytest.raises(UnknownNameError, match=r"open_clip model name; write openclip:ViT-B-16:TAG \(e\.g\. openclip:ViT-B-16:laion2b_s34b_b88k\)"):
        catalog.check_backbone_name("ViT-B-16")
    with pytest.raises(UnknownNameError, match="openclip:ViT-L-14:openai"):
        catalog.check_backbone_name("ViT-L-14/openai")
    with pytest.raises(UnknownNameError, match="unknown backbone 'dinov2_vitb16'. Closest: .*dinov2_vitb14"):
        catalog.check_backbone_name("dinov2_vitb16")
    with pytest.raises(UnknownNameError, match="give a name after 'hf:'"):
        catalog.check_backbone_name("hf:")


def test_check_accepts_an_entry_registered_at_run_time() -> None:
    from _tinynet import NAME, registered

    with registered():
        catalog.check_backbone_name(NAME)
    with pytest.raises(UnknownNameError):
        catalog.check_backbone_name(NAME)


def test_missing_weights_error_gives_the_download_commands() -> None:
    with pytest.raises(WeightsError) as info:
        resolve_weights("dinov2_vitb14")
    message = str(info.value)
    assert "`hf download facebook/dinov2-base model.safetensors`" in message
    assert "curl -L --create-dirs -o " in message and "checkpoints/dinov2_vitb14_pretrain.pth https://dl.fbaipublicfiles.com/" in message


def test_weights_folders_are_searched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    release = tmp_path / "release"
    release.mkdir()
    (release / "sam_vit_b_01ec64.pth").write_bytes(b"x")
    hub = tmp_path / "hub" / "facebook" / "dinov2-small"
    hub.mkdir(parents=True)
    (hub / "model.safetensors").write_bytes(b"y")
    sam, dino = catalog.entries()["sam_vitb"].weights, catalog.entries()["dinov2_vits14"].weights
    assert found_where(sam) is None and found_where(sam, [release]) == str(release / "sam_vit_b_01ec64.pth")
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path / "hub"))
    assert found_where(dino) == str(hub / "model.safetensors")
    path, digest = resolve_weights("vit_b", weights=release)  # --weights DIR
    assert path == release / "sam_vit_b_01ec64.pth" and digest.startswith("sha256:")
    with pytest.raises(WeightsError, match="the folder has none of sam_vit_l_0b3195.pth"):
        resolve_weights("sam_vitl", weights=release)


def test_cli_models_fits_120_columns_filters_and_explains() -> None:
    from fmprobe.cli import app

    runner = CliRunner()
    table = runner.invoke(app, ["models", "--available"])
    assert table.exit_code == 0, table.output
    assert max(len(line) for line in table.output.splitlines()) <= 120 and "dinov3_vitl16" in table.output
    rows = json.loads(runner.invoke(app, ["models", "*sam2*", "--json"]).output)
    assert [r["name"] for r in rows] == ["sam2_hiera_t", "sam2_hiera_s", "sam2_hiera_bplus", "sam2_hiera_l"]
    details = runner.invoke(app, ["models", "vit_b"]).output
    assert "aliases:        vit_b, sam_vit_b, facebook/sam-vit-base" in details and "hf download facebook/sam-vit-base" in details


def _cache_file(hub: Path, repo: str, filename: str, text: str) -> None:
    """A file in the Hugging Face cache layout (refs/main -> snapshots/<commit>/FILE), as `hf download` leaves it."""
    folder = hub / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / "main").write_text("0" * 40)
    (folder / "snapshots" / ("0" * 40)).mkdir(parents=True, exist_ok=True)
    (folder / "snapshots" / ("0" * 40) / filename).write_text(text)


def test_timm_hub_form_builds_from_the_cached_config_and_names_the_download() -> None:
    import huggingface_hub.constants as hc

    from fmprobe.backbones import get_spec

    config = {"architecture": "vit_tiny_patch16_224", "num_classes": 10, "model_args": {"depth": 2},
              "pretrained_cfg": {"input_size": [3, 160, 160], "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "crop_pct": 1.0}}  # fmt: skip
    _cache_file(Path(hc.HF_HUB_CACHE), "someone/tiny-vit", "config.json", json.dumps(config))
    spec = get_spec("hf_hub:someone/tiny-vit")
    assert spec.name == "hf-hub:someone/tiny-vit" and spec.native_resolution == 160 and spec.preprocess.mean == (0.5, 0.5, 0.5)
    assert spec.default_readout == "cls" and len(spec.build(160).model.blocks) == 2  # the config's model_args
    with pytest.raises(WeightsError, match="`hf download someone/tiny-vit model.safetensors`"):
        resolve_weights("hf-hub:someone/tiny-vit")
    with pytest.raises(WeightsError, match="hf download someone/absent config.json"):
        get_spec("hf-hub:someone/absent")

"""The catalog: torch-free, and equal to what the registry builds (so catalog.json cannot go stale)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fmprobe.backbones import catalog

HEAVY = ("torch", "timm", "open_clip", "transformers")
LARGE = 250_000_000  # parameters: the meta build of the ViT-L/g/H-sized entries takes seconds each on 2 cores
ENTRIES = [
    pytest.param(name, marks=pytest.mark.slow) if (entry.params or 0) >= LARGE else name
    for name, entry in catalog.entries().items()
]  # fmt: skip


def test_catalog_names_and_listing_import_no_torch() -> None:
    code = (
        "import sys, json\n"
        "import fmprobe\n"
        "from fmprobe.backbones.catalog import check_backbone_name\n"
        "for name in ['dinov2_vitb14', 'vit_b', 'resnet50', 'timm:resnet50', 'hf_hub:timm/x', 'facebook/dinov2-large', 'sam_vitb:random:2']:\n"
        "    check_backbone_name(name)\n"
        "errors = []\n"
        "for name in ['resnet5O', 'ViT-B-16', 'dinov2_vitb14:randm']:\n"
        "    try: check_backbone_name(name)\n"
        "    except Exception as err: errors.append(str(err))\n"
        "rows = fmprobe.list_models('*sam*', available=True)\n"
        f"print(json.dumps([errors, [r['name'] for r in rows], [m for m in {HEAVY!r} if m in sys.modules]]))\n"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root,
                         env={"PYTHONPATH": str(root), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}).stdout  # fmt: skip
    errors, names, heavy = json.loads(out.splitlines()[-1])
    assert heavy == []
    assert "Closest: resnet50" in errors[0] and "openclip:ViT-B-16:TAG" in errors[1] and "modifier 'randm'" in errors[2]
    assert names == ["sam_vitb", "sam_vitl", "sam_vith", "sam2_hiera_t", "sam2_hiera_s", "sam2_hiera_bplus", "sam2_hiera_l"]


@pytest.mark.parametrize("name", ENTRIES)
def test_catalog_entry_equals_the_registry_built_on_meta(name: str) -> None:
    """Widths and parameter counts from a meta-device build, aliases and weights: what --rebuild would write."""
    from fmprobe.backbones import get_spec

    assert catalog.describe_entry(get_spec(name)).to_dict() == catalog.entries()[name].to_dict(), (
        f"catalog.json is stale for {name}: run `python -m fmprobe.backbones.catalog --rebuild`"
    )


def test_catalog_lists_every_registered_entry_and_timm_snapshot_matches() -> None:
    import timm

    from fmprobe.backbones import BACKBONES

    builtin = [n for n, s in BACKBONES.items() if s.family != "tinynet"]
    assert sorted(catalog.entries()) == sorted(builtin)  # other tests may re-register an entry, moving it last
    version, names = catalog.timm_snapshot()
    if version != timm.__version__:
        pytest.skip(f"timm snapshot is {version}, installed {timm.__version__}: names are asked from timm")
    assert names == frozenset(timm.list_models())


def test_list_models_filters_by_glob_family_and_alias() -> None:
    assert [r["name"] for r in catalog.list_models("vit_b")] == ["sam_vitb"]  # an alias gives its entry
    assert {r["name"] for r in catalog.list_models("*laion2b*")} == {"openclip_vitb16_laion2b"}
    assert {r["family"] for r in catalog.list_models(family="dinov2")} == {"dinov2"}
    row = catalog.list_models("dinov2_vitb14")[0]
    assert row["dims"] == {"cls": 768, "mean_patch": 768, "cls_mean": 1536} and row["params_m"] == 85.72
    assert "hf download facebook/dinov2-base model.safetensors" in row["download"]
    with pytest.raises(catalog.UnknownNameError, match="unknown backbone family 'dino'; known: .*dinov2"):
        catalog.list_models(family="dino")

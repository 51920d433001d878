"""A new backbone family is one file plus one line: a throwaway family, declared and registered here exactly as a
family file does it, works through the registry (build, random control, weights file, published location, shapes)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from _tinynet import registered

from fmprobe.backbones import create_backbone, describe_shapes, get_spec, resolve_weights
from fmprobe.backbones.weights import sha256_file
from fmprobe.errors import WeightsError


@pytest.fixture(autouse=True)
def _tinynet() -> Iterator[None]:
    with registered():
        yield


def test_a_new_family_works_through_the_registry(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    random = create_backbone("throwaway_tinynet:random")
    assert random.random_init and random.resolution == 32 and random.spec is get_spec("throwaway_tinynet")
    path = tmp_path / "tiny.safetensors"
    save_file({k: torch.randn_like(v) for k, v in random.model.state_dict().items()}, str(path))
    assert resolve_weights("throwaway_tinynet", path) == (path, "sha256:" + sha256_file(path))
    loaded = create_backbone("throwaway_tinynet", weights=path)
    images = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        out = loaded.model(images, ("mean",))["mean"]
    assert out.shape == (2, 8) and not torch.allclose(out, random.model(images, ("mean",))["mean"])
    with pytest.raises(WeightsError, match=r"no weights for 'throwaway_tinynet' .*model\.safetensors from https://huggingface\.co/someone/tinynet"):
        resolve_weights("throwaway_tinynet")  # offline, nothing cached: the published location is named
    assert describe_shapes(get_spec("throwaway_tinynet")) == ({"mean": 8}, pytest.approx((3 * 8 * 9 + 8 + 2 * (8 * 8 * 9 + 8)) / 1e6))
    groups = loaded.model.block_groups()
    assert groups.stem == ("stem.weight", "stem.bias") and len(groups.blocks) == 2 and groups.tail == ()

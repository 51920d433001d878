"""The cost model behind `fmprobe study --dry-run`: FLOPs from a meta-device build, the machine's matmul speed."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from fmprobe.backbones import get_spec
from fmprobe.backbones.cost import estimated_rate, forward_flops, machine_flops


def test_flops_grow_with_resolution_and_allocate_nothing() -> None:
    spec = get_spec("efficientnet_lite0_imagenet")
    small, large = forward_flops(spec, 64), forward_flops(spec, 128)
    assert small and large and 3.5 < large / small < 4.5  # a convnet's cost follows the pixel count


def test_rate_is_machine_speed_over_model_cost() -> None:
    spec = get_spec("resnet18")
    cpu = torch.device("cpu")
    assert machine_flops(cpu) > 1e8 and machine_flops(cpu) == machine_flops(cpu)  # measured once per process
    assert estimated_rate(spec, 64, cpu) == pytest.approx(4 * estimated_rate(spec, 128, cpu), rel=0.15)


def test_a_model_that_cannot_be_traced_has_no_estimate() -> None:
    def broken(size: int):  # noqa: ANN202
        raise RuntimeError("needs a real file")

    spec = dataclasses.replace(get_spec("resnet18"), build=broken)
    assert forward_flops(spec, 64) is None and estimated_rate(spec, 64, torch.device("cpu")) is None

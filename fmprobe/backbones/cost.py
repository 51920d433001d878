"""What a forward pass costs: FLOPs counted on a shape-only (meta-device) build, and this machine's matmul speed.

Next to the shape code (``describe_shapes``) because both build the network on the meta device: nothing is
allocated and no weights are read, so a study can print its cost before any download. The study's dry run turns
these into images/s where no earlier extraction has measured them.
"""

from __future__ import annotations

import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from fmprobe.backbones import BackboneSpec

EFFICIENCY = 0.3  # share of the matmul peak that convolution and attention stacks reach on the CPUs here
MATMUL_SIZE = 1024  # square fp32 matmul used to measure the machine
MATMUL_REPEATS = 8

_MACHINE: dict[str, float] = {}  # device -> measured FLOP/s, once per process


def forward_flops(spec: BackboneSpec, size: int) -> int | None:
    """FLOPs of one image at ``size`` px through the default readout; None when the family cannot be traced on the
    meta device (some builders read files or call ops without meta kernels)."""
    try:
        with torch.device("meta"):
            model = spec.build(size)
            counter = FlopCounterMode(display=False)
            with counter:
                model.forward_readouts(torch.empty(1, 3, size, size), (spec.default_readout,))
        return int(counter.get_total_flops())
    except Exception:  # any failure only means "no estimate"; the dry run shows '?'
        return None


def machine_flops(device: torch.device) -> float:
    """Measured fp32 FLOP/s of ``device`` (a short warm matmul loop, cached per device for the process)."""
    key = str(device)
    if key not in _MACHINE:
        a = torch.randn(MATMUL_SIZE, MATMUL_SIZE, device=device)
        torch.mm(a, a)
        start = time.perf_counter()
        for _ in range(MATMUL_REPEATS):
            torch.mm(a, a)
        if device.type == "cuda":
            torch.cuda.synchronize()
        _MACHINE[key] = MATMUL_REPEATS * 2 * MATMUL_SIZE**3 / (time.perf_counter() - start)
    return _MACHINE[key]


def estimated_rate(spec: BackboneSpec, size: int, device: torch.device) -> float | None:
    """Images/s from the model's FLOPs and the machine's matmul speed at :data:`EFFICIENCY`; None if unknown."""
    flops = forward_flops(spec, size)
    if flops is None:
        return None
    return machine_flops(device) * EFFICIENCY / max(flops, 1)


__all__ = ["EFFICIENCY", "estimated_rate", "forward_flops", "machine_flops"]

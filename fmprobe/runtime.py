"""Device and compute-dtype choice, per machine.

bf16 autocast is 1.6-3x faster than fp32 on CPUs with native bf16 (avx512_bf16 / AMX) and about 4x slower on
AVX2-only CPUs, so it is never assumed: ``auto`` checks the CPU flags, the user can force either, and the
dtype actually used goes into the cache fingerprint (bf16 and fp32 features differ).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from functools import lru_cache
from typing import Literal

import torch

from fmprobe.errors import FmprobeError

DtypeName = Literal["fp32", "bf16", "fp16"]
DTYPE_CHOICES = ("auto", "fp32", "bf16", "fp16")
TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_native_bf16() -> bool:
    """True where bf16 matrix math runs in hardware (AVX512-BF16 or AMX-BF16; Apple/ARM: BF16 extension)."""
    flags = cpu_flags()
    return bool({"avx512_bf16", "amx_bf16", "bf16"} & flags)


def choose_device(requested: str = "auto", local_rank: int | None = None) -> torch.device:
    if requested not in ("auto", "cpu", "cuda") and not requested.startswith("cuda:"):
        raise FmprobeError(f"--device {requested!r}: use auto, cpu, cuda or cuda:N.")
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise FmprobeError(f"--device {requested}: CUDA is not available on this machine; use --device cpu or auto.")
    if requested.startswith("cuda:"):
        return torch.device(requested)
    rank = local_rank if local_rank is not None else int(os.environ.get("LOCAL_RANK", 0))
    return torch.device("cuda", rank % max(torch.cuda.device_count(), 1))


def dtype_candidates(device: torch.device, requested: str = "auto") -> tuple[DtypeName, ...]:
    """The dtypes ``auto`` may pick here: one where the answer is known, (bf16, fp32) where only a timed
    probe can tell (CPUs with native bf16 still run some models slower in bf16 than in fp32)."""
    chosen = choose_dtype(device, requested)
    requested = os.environ.get("FMPROBE_DTYPE", requested) if requested == "auto" else requested
    if requested == "auto" and device.type == "cpu" and chosen == "bf16":
        return ("bf16", "fp32")
    return (chosen,)


def timed_choice(candidates: tuple[DtypeName, ...], run: Callable[[DtypeName], None], repeats: int = 2) -> tuple[DtypeName, dict[str, float]]:
    """The fastest of ``candidates`` for ``run`` (one warm-up call each, then the best of ``repeats``)."""
    seconds: dict[str, float] = {}
    for dtype in candidates:
        run(dtype)
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            run(dtype)
            best = min(best, time.perf_counter() - start)
        seconds[dtype] = best
    return min(candidates, key=lambda d: seconds[d]), seconds


def choose_dtype(device: torch.device, requested: str = "auto") -> DtypeName:
    """The compute dtype for ``device``: ``requested`` unless ``auto`` (also settable by ``FMPROBE_DTYPE``).

    ``auto`` by capability alone: extraction refines it with a timed probe (``dtype_candidates``)."""
    requested = os.environ.get("FMPROBE_DTYPE", requested) if requested == "auto" else requested
    if requested not in DTYPE_CHOICES:
        raise FmprobeError(f"--dtype {requested!r}: use one of {', '.join(DTYPE_CHOICES)}.")
    if requested != "auto":
        if requested == "fp16" and device.type == "cpu":
            raise FmprobeError("--dtype fp16 is not supported on the CPU; use bf16 or fp32.")
        return requested  # type: ignore[return-value]
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_native_bf16() else "fp32"


@contextlib.contextmanager
def autocast(device: torch.device, dtype: DtypeName) -> Iterator[None]:
    if dtype == "fp32":
        yield
        return
    with torch.autocast(device_type=device.type, dtype=TORCH_DTYPES[dtype]):
        yield

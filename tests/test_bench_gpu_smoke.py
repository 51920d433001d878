"""bench/gpu.sh's Python part runs end to end on the CPU in its --smoke mode, so the GPU benchmark cannot rot."""

from __future__ import annotations

import functools
import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@functools.cache
def _bench():
    """bench/gpu_bench.py as a module (registered, so its dataclasses and worker functions resolve)."""
    spec = importlib.util.spec_from_file_location("gpu_bench", ROOT / "bench" / "gpu_bench.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_gpu_bench_smoke_measures_every_figure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ratios = _bench().main(["--smoke", "--out", str(tmp_path)])
    labels = [label for label, _ in ratios]
    assert [label.split(" ", 1)[1] for label in labels] == [
        "end-to-end extract", "end-to-end extract, whole call", "end-to-end, warm pixel cache", "GPU JPEG decode + forward (bench-only)",
    ]  # fmt: skip
    assert all(math.isfinite(r) and r > 0 for _, r in ratios)
    printed = capsys.readouterr().out
    assert "TFLOP/s" in printed and "of the bf16 bound" in printed
    assert printed.strip().splitlines()[-1].startswith("ratios (end-to-end / raw forward): ")  # the ratios last
    assert len(list((tmp_path / "data" / "imgs").glob("*.jpg"))) == 32


def test_the_gpu_geometry_matches_the_cpu_transform() -> None:
    """The bench-only GPU path resizes like ImageTransform (so its img/s is for the same work)."""
    import numpy as np
    import torch
    from PIL import Image

    from fmprobe.backbones.base import Preprocess
    from fmprobe.backbones.preprocess import ImageTransform

    rng = np.random.default_rng(0)
    array = np.array(Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((96, 72), Image.BICUBIC))
    for config in (Preprocess(size=32, crop_pct=0.875), Preprocess(size=32, resize_mode="squash"), Preprocess(size=32, resize_mode="longest_pad", interpolation="bilinear")):
        cpu, valid = ImageTransform(config).to_uint8(Image.fromarray(array))
        gpu, gpu_valid = _bench().gpu_geometry(torch.from_numpy(array).permute(2, 0, 1)[None], config)
        assert tuple(valid) == gpu_valid and float((gpu[0] - cpu.float()).abs().mean()) < 3.0, config


def test_gpu_sh_is_a_thin_wrapper_that_passes_its_arguments() -> None:
    text = (ROOT / "bench" / "gpu.sh").read_text()
    assert "bench/gpu_bench.py" in text and '"$@"' in text
    assert subprocess.run(["bash", "-n", str(ROOT / "bench" / "gpu.sh")]).returncode == 0

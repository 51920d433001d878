"""How close does `fmprobe extract` get to a GPU's bf16 compute bound? (`bench/gpu.sh` runs this; under 5 minutes
on one H100/H200-class GPU with 16 cores.)

One run: (1) the GPU's dense bf16 matmul TFLOP/s, measured; (2) a synthetic JPEG data set written in parallel;
then per model (DINOv2 ViT-B/14 at 224 and SAM ViT-B at 1024, random weights: speed does not depend on them):
raw bf16 forward img/s on tensors already on the GPU (optionally torch.compile'd), end-to-end `fmprobe extract`
img/s from the JPEG files (decoding workers = cores), the same with a warm pixel cache, and a bench-only path that
decodes the JPEGs on the GPU in batches (`torchvision.io.decode_jpeg(device="cuda")`; the files' bytes are read by
the workers, resize and normalisation run on the GPU; no feature file is written). "end-to-end extract" is the
streaming rate the feature file records (first batch to last); "whole call" adds listing and hashing the files,
building the model and writing the file, a fixed cost that 20k images do not amortise on a fast GPU. The warm
pixel cache figure is a whole call (it includes verifying the cache's checksums). Every figure is printed as a
fraction of the bf16 compute bound (FLOPs per image, from torch.utils.flop_counter, x img/s / measured TFLOP/s)
and as a ratio to the raw forward; the ratios come last. Targets: ViT-B/14 end-to-end >= 0.9 x raw, raw >= 50% of
the bound.

    python bench/gpu_bench.py [--images 20000] [--workers 16] [--compile] [--smoke]

``--smoke`` runs the same code on the CPU in seconds (tiny images, few of them, tiny models), so it cannot rot
(tests/test_bench_gpu_smoke.py).
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fmprobe.backbones import create_backbone  # noqa: E402
from fmprobe.backbones.base import Preprocess  # noqa: E402
from fmprobe.extract import extract_features  # noqa: E402
from fmprobe.runtime import autocast  # noqa: E402
from fmprobe.store import FeatureFile  # noqa: E402


@dataclass(frozen=True)
class Case:
    """One model to measure: registry name, input size, images of the data set it reads, batch size."""

    name: str
    resolution: int
    images: int
    batch_size: int


def cases(args: argparse.Namespace) -> list[Case]:
    if args.smoke:
        return [Case("vit_tiny_patch16_224:random", 32, args.images, 16)]
    return [Case("dinov2_vitb14:random", 224, args.images, 256), Case("sam_vitb:random", 1024, min(args.images, args.sam_images), 32)]


# ---- the bound: dense bf16 matmul throughput and FLOPs per image ----


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_tflops(device: torch.device, n: int, seconds: float = 2.0) -> float:
    """Dense bf16 matmul TFLOP/s of ``n`` x ``n`` products, measured for about ``seconds`` after a warm-up."""
    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    a @ b
    sync(device)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or count < 3:
        for _ in range(10):
            a @ b
        count += 10
        sync(device)
    return 2 * n**3 * count / (time.perf_counter() - start) / 1e12


def flops_per_image(model: torch.nn.Module, readouts: tuple[str, ...], resolution: int, device: torch.device) -> float:
    """Forward FLOPs of one image (matmuls and convolutions: what the bf16 bound counts)."""
    from torch.utils.flop_counter import FlopCounterMode

    sample = torch.randn(1, 3, resolution, resolution, device=device)
    with torch.inference_mode(), autocast(device, "bf16"), FlopCounterMode(display=False) as counter:
        model(sample, readouts)
    return float(counter.get_total_flops())


# ---- the synthetic JPEG data set, written by all cores ----


def _write_jpegs(job: tuple[Path, int, int, int]) -> None:
    """Images ``first..first+count`` of the data set: smooth colour regions plus texture, seeded by index."""
    from PIL import Image

    folder, first, count, size = job
    for i in range(first, first + count):
        rng = np.random.default_rng(i)
        small = rng.integers(0, 256, (max(2, size // 32), max(2, size // 32), 3), dtype=np.uint8)
        image = Image.fromarray(small).resize((size, size), Image.BICUBIC)
        noise = rng.integers(-12, 13, (size, size, 3))
        Image.fromarray(np.clip(np.asarray(image, dtype=np.int16) + noise, 0, 255).astype(np.uint8)).save(folder / f"{i:06d}.jpg", quality=90)


def write_dataset(root: Path, n: int, size: int, workers: int) -> Path:
    """``n`` JPEG files of ``size`` x ``size`` and a manifest (path, label, split), in parallel; the manifest."""
    folder = root / "imgs"
    folder.mkdir(parents=True, exist_ok=True)
    step = max(1, math.ceil(n / (workers * 4)))
    jobs = [(folder, first, min(step, n - first), size) for first in range(0, n, step)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        list(pool.map(_write_jpegs, jobs))
    return write_manifest(root, n)


def write_manifest(root: Path, n: int) -> Path:
    """A manifest of the first ``n`` files (several cases read subsets of one data set)."""
    path = root / f"manifest-{n}.csv"
    with path.open("w", newline="") as fh:
        rows = [[f"imgs/{i:06d}.jpg", ["a", "b"][i % 2], ["train", "train", "val", "test"][i % 4]] for i in range(n)]
        csv.writer(fh).writerows([["path", "label", "split"], *rows])
    return path


# ---- raw forward, end to end, pixel cache, GPU decoding ----


def load_model(case: Case, device: torch.device, compile_model: bool):
    loaded = create_backbone(case.name, resolution=case.resolution)
    model = loaded.model.to(device)
    if model.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return loaded, (torch.compile(model) if compile_model else model)


@torch.inference_mode()
def raw_forward(model, readouts: tuple[str, ...], case: Case, device: torch.device, seconds: float) -> float:
    """img/s of bf16 forwards of one preloaded batch (the model's limit here), for about ``seconds``."""
    batch = torch.randn(case.batch_size, 3, case.resolution, case.resolution, device=device)
    with autocast(device, "bf16"):
        for _ in range(2):
            model(batch, readouts)  # warm-up (and compilation)
        sync(device)
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds or count < 2:
            out = model(batch, readouts)
            count += 1
        out[readouts[0]].float().cpu()
        sync(device)
    return count * case.batch_size / (time.perf_counter() - start)


def end_to_end(case: Case, manifest: Path, out: Path, workers: int, device: torch.device, pixel_cache: bool = False) -> tuple[float, float]:
    """img/s of `fmprobe extract` from the files to a finished feature file (the library call the CLI makes): over
    the whole call (listing and hashing the data set, building the model, starting workers, writing the file) and
    while streaming (the rate the feature file records: from the first batch to the last)."""
    options = dict(resolution=case.resolution, batch_size=case.batch_size, num_workers=workers, dtype="bf16", out=out,
                   device=device.type, progress=False, force=True, pixel_cache=pixel_cache)  # fmt: skip
    start = time.perf_counter()
    result = extract_features(f"csv:{manifest}", case.name, **options)  # type: ignore[arg-type]
    wall = result.n_images / (time.perf_counter() - start)
    return wall, float(FeatureFile(result.path).attrs["images_per_s"])


def gpu_geometry(images: torch.Tensor, config: Preprocess) -> tuple[torch.Tensor, tuple[int, int]]:
    """uint8 ``[B, 3, H, W]`` (one size) -> float ``[B, 3, S, S]`` in 0-255 and the valid height and width: the
    geometry of ImageTransform.resize (resize and centre crop, squash, or longest side then padding), on the
    images' device."""
    size, (h, w) = config.size, images.shape[-2:]
    mode = "bicubic" if config.interpolation == "bicubic" else "bilinear"
    x = images.float()
    if config.resize_mode == "squash":
        return F.interpolate(x, size=(size, size), mode=mode, antialias=True, align_corners=False).clamp_(0, 255), (size, size)
    if config.resize_mode == "longest_pad":
        scale = size / max(h, w)
        x = F.interpolate(x, size=(round(h * scale), round(w * scale)), mode=mode, antialias=True, align_corners=False)
        valid = (x.shape[-2], x.shape[-1])
        return F.pad(x, (0, size - x.shape[-1], 0, size - x.shape[-2])).clamp_(0, 255), valid
    short = math.floor(size / config.crop_pct)
    scale = short / min(h, w)
    x = F.interpolate(x, size=(max(short, round(h * scale)), max(short, round(w * scale))), mode=mode, antialias=True, align_corners=False)
    top, left = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
    return x[..., top : top + size, left : left + size].clamp_(0, 255), (size, size)


class _FileBytes(torch.utils.data.Dataset):
    """The encoded bytes of each file (plain bytes: small tensors sent from workers each cost a shared file
    descriptor, and thousands of them exhaust the process's)."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> bytes:
        return self.paths[i].read_bytes()


@torch.inference_mode()
def gpu_decode(model, loaded, case: Case, paths: list[Path], workers: int, device: torch.device) -> float:
    """Bench-only: img/s of reading bytes in workers, batched ``decode_jpeg`` on ``device``, resize, normalise and
    forward (no feature file); the GPU path fmprobe could take where CPU decoding is the bottleneck."""
    warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision")
    import torchvision.io

    loader = torch.utils.data.DataLoader(
        _FileBytes(paths), batch_size=case.batch_size, num_workers=workers, collate_fn=list,
        prefetch_factor=4 if workers else None,
    )  # fmt: skip
    config = loaded.preprocess
    mean = torch.tensor(config.mean, device=device).view(1, 3, 1, 1) * 255
    std = torch.tensor(config.std, device=device).view(1, 3, 1, 1) * 255
    readouts = (loaded.spec.default_readout,)
    start, n = time.perf_counter(), 0
    for batch in loader:
        encoded = [torch.frombuffer(bytearray(data), dtype=torch.uint8) for data in batch]
        decoded = torchvision.io.decode_jpeg(encoded, mode=torchvision.io.ImageReadMode.RGB, device=device)
        pixels, (vh, vw) = gpu_geometry(torch.stack(decoded), config)
        images = (pixels - mean) / std
        images[..., vh:, :] = 0  # padding is zero after normalisation, as ImageTransform.normalise_batch makes it
        images[..., :, vw:] = 0
        with autocast(device, "bf16"):
            out = model(images, readouts)
        out[readouts[0]].float().cpu()
        n += len(encoded)
    sync(device)
    return n / (time.perf_counter() - start)


# ---- the run ----


def measure(case: Case, data: Path, work: Path, args: argparse.Namespace, device: torch.device, bound: float) -> list[tuple[str, float]]:
    """The figures of one case, each printed as img/s, fraction of the bf16 bound and ratio to the raw forward."""
    loaded, model = load_model(case, device, args.compile)
    readouts = (loaded.spec.default_readout,)
    flops = flops_per_image(loaded.model.to(device), readouts, case.resolution, device)
    manifest = write_manifest(data, case.images)
    raw = raw_forward(model, readouts, case, device, args.seconds)
    figures = [("raw forward" + (" (compiled)" if args.compile else ""), raw)]
    wall, streaming = end_to_end(case, manifest, work / "features", args.workers, device)
    figures += [("end-to-end extract", streaming), ("end-to-end extract, whole call", wall)]
    end_to_end(case, manifest, work / "cached", args.workers, device, pixel_cache=True)  # builds the cache
    figures.append(("end-to-end, warm pixel cache", end_to_end(case, manifest, work / "cached", args.workers, device, pixel_cache=True)[0]))
    paths = sorted((data / "imgs").glob("*.jpg"))[: case.images]
    figures.append(("GPU JPEG decode + forward (bench-only)", gpu_decode(model, loaded, case, paths, args.workers, device)))
    print(f"{case.name} at {case.resolution}px, batch {case.batch_size}, {case.images} images: {flops / 1e9:.1f} GFLOPs/image")
    for label, rate in figures:
        print(f"  {label:<40} {rate:9.1f} img/s  {flops * rate / bound:6.1%} of the bf16 bound  {rate / raw:.3f} x raw")
    return [(f"{case.name} {label}", rate / raw) for label, rate in figures[1:]]


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=20000, help="JPEG files in the data set (DINOv2 reads all)")
    parser.add_argument("--sam-images", type=int, default=3000, help="of which SAM ViT-B at 1024 reads the first N")
    parser.add_argument("--size", type=int, default=512, help="side of the square JPEG files")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="decoding workers (default: cores)")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each timed raw-forward loop")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model for the raw forward and GPU decode")
    parser.add_argument("--out", type=Path, default=None, help="work folder (default: a temporary one)")
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny images and model, a few seconds (the test suite's)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.images, args.size, args.workers, args.seconds = min(args.images, 32), 48, min(args.workers, 1), 0.2
    return args


def main(argv: list[str] | None = None) -> list[tuple[str, float]]:
    args = parse(argv)
    started = time.perf_counter()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # random weights: nothing to download
    device = torch.device("cpu" if args.smoke or not torch.cuda.is_available() else "cuda")
    work = args.out or Path(tempfile.mkdtemp(prefix="fmprobe-gpu-bench-"))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (smoke)" if args.smoke else "CPU (no GPU found)"
    bound = matmul_tflops(device, 256 if args.smoke else 8192, 0.2 if args.smoke else 3.0) * 1e12
    print(f"device: {name}; torch {torch.__version__}; {os.cpu_count()} cores, {args.workers} decoding workers")
    print(f"dense bf16 matmul: {bound / 1e12:.3g} TFLOP/s (measured; the bound below)")
    t0 = time.perf_counter()
    write_dataset(work / "data", args.images, args.size, max(1, args.workers))
    print(f"data: {args.images} JPEG files of {args.size}x{args.size} written in {time.perf_counter() - t0:.1f}s")
    ratios: list[tuple[str, float]] = []
    for case in cases(args):
        ratios += measure(case, work / "data", work / slug(case.name), args, device, bound)
    print(f"total {time.perf_counter() - started:.0f}s")
    print("ratios (end-to-end / raw forward): " + ", ".join(f"{n} {r:.3f}" for n, r in ratios))
    return ratios


def slug(name: str) -> str:
    return name.replace(":", "-").replace("/", "-")


if __name__ == "__main__":
    main()

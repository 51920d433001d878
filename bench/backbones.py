"""Forward throughput of one variant of each foundation-model family (random weights: speed does not depend on them).

CPU: images/s at 224 px in the compute dtype ``fmprobe.runtime.choose_dtype`` picks for this machine (printed),
plus SAM ViT-B at its native 1024 px and at 224 px (the first model is also timed in fp32, for comparison). GPU (when CUDA is present): DINOv2 ViT-B/14 at 224 px against
the compute bound (peak dense matmul throughput measured on the same GPU / FLOPs per image, ~46 GFLOPs).

    python bench/backbones.py [--batch-size 8] [--seconds 3] [--models dinov2_vitb14,sam_vitb]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fmprobe.backbones import create_backbone  # noqa: E402
from fmprobe.runtime import autocast, choose_device, choose_dtype  # noqa: E402

FAMILIES = (  # one variant per family
    "dinov2_vitb14", "openclip_vitb16_laion2b", "sam_vitb", "seem_focalt", "blip_vitb16", "rad_dino", "biomedclip",
    "siglip2_vitb16", "mae_vitb16", "sam2_hiera_t", "aimv2_vitl14", "dinov3_vitb16",
)  # fmt: skip


def flops_per_image(model: torch.nn.Module, readouts: tuple[str, ...], size: int) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(torch.zeros(1, 3, size, size), readouts)
    return float(counter.get_total_flops())


@torch.inference_mode()
def images_per_s(name: str, size: int, batch: int, seconds: float, device: torch.device, dtype: str, warmup: bool = True) -> tuple[float, int]:
    loaded = create_backbone(f"{name}:random", resolution=size)
    model = loaded.model.to(device)
    readouts = (loaded.spec.default_readout,)
    x = torch.randn(batch, 3, size, size, device=device)
    if model.channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    with autocast(device, dtype):  # type: ignore[arg-type]
        if warmup:
            model(x, readouts)
        done, start = 0, time.perf_counter()
        while True:
            out = model(x, readouts)[readouts[0]]
            if device.type == "cuda":
                torch.cuda.synchronize()
            out.float().cpu()
            done += batch
            if time.perf_counter() - start >= seconds:
                break
    return done / (time.perf_counter() - start), done


def cpu_section(models: tuple[str, ...], batch: int, seconds: float, also_fp32: bool = False) -> None:
    device = torch.device("cpu")
    dtype = choose_dtype(device)
    print(f"CPU: {torch.get_num_threads()} threads, compute dtype {dtype} (fmprobe.runtime.choose_dtype), batch {batch}")
    for name in models:
        ips, n = images_per_s(name, 224, batch, seconds, device, dtype)
        line = f"  {name:26s} 224 px  {ips:7.2f} img/s  ({n} images)"
        if dtype != "fp32" and (also_fp32 or name == models[0]):
            ips32, _ = images_per_s(name, 224, batch, seconds, device, "fp32")
            line += f"   [fp32: {ips32:.2f} img/s]"
        print(line)
    if "sam_vitb" in models:
        ips, n = images_per_s("sam_vitb", 1024, 1, seconds, device, dtype, warmup=False)
        print(f"  {'sam_vitb':26s} 1024 px {ips:7.3f} img/s  ({n} image{'s' if n > 1 else ''}, no warm-up)")


def gpu_section(batch: int, seconds: float) -> None:
    if not torch.cuda.is_available():
        print("GPU: no GPU available (DINOv2 ViT-B/14 at 224 px vs its ~46 GFLOPs/img compute bound is measured when CUDA is present)")
        return
    device = choose_device("cuda")
    dtype = choose_dtype(device)
    torch_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]
    a = torch.randn(8192, 8192, device=device, dtype=torch_dtype)
    for _ in range(3):
        a @ a
    torch.cuda.synchronize()
    start, n = time.perf_counter(), 20
    for _ in range(n):
        a @ a
    torch.cuda.synchronize()
    peak = n * 2 * 8192**3 / (time.perf_counter() - start)
    spec_model = create_backbone("dinov2_vitb14:random", resolution=224)
    flops = flops_per_image(spec_model.model, ("cls",), 224)
    ips, _ = images_per_s("dinov2_vitb14", 224, batch, seconds, device, dtype)
    bound = peak / flops
    print(f"GPU: {torch.cuda.get_device_name(device)}, {dtype}; dense matmul peak {peak / 1e12:.0f} TFLOP/s")
    print(f"  dinov2_vitb14 224 px: {flops / 1e9:.1f} GFLOPs/img, {ips:,.0f} img/s = {ips / bound:.0%} of the compute bound ({bound:,.0f} img/s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--gpu-batch-size", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=3.0, help="minimum timed seconds per model (after one warm-up batch)")
    parser.add_argument("--models", default=",".join(FAMILIES))
    parser.add_argument("--also-fp32", action="store_true", help="time every model in fp32 too (the first one always is)")
    args = parser.parse_args()
    torch.manual_seed(0)
    cpu_section(tuple(m for m in args.models.split(",") if m), args.batch_size, args.seconds, args.also_fp32)
    gpu_section(args.gpu_batch_size, args.seconds)


if __name__ == "__main__":
    main()

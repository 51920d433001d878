"""Training throughput of each finetune setting (images/s through one optimizer step: forward, loss, backward,
gradient clipping, AdamW), on synthetic batches so image decoding is left out; random weights (speed does not
depend on them).

CPU: EfficientNet-Lite0 at 224 px per setting, in the compute dtype ``fmprobe.runtime.choose_dtype`` picks for this
machine (printed; ``--dtype`` forces one). GPU (when CUDA is present): also DINOv2 ViT-B/14 at 224 px, full and
linear, in bf16.

    python bench/finetune_speed.py [--batch-size 32] [--seconds 10] [--settings linear,attention,partial:2,full]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fmprobe.backbones import create_backbone  # noqa: E402
from fmprobe.finetune.model import FinetuneModel  # noqa: E402
from fmprobe.finetune.recipe import Recipe  # noqa: E402
from fmprobe.runtime import autocast, choose_device, choose_dtype  # noqa: E402

SETTINGS = ("linear", "attention", "partial:2", "full")


def images_per_s(
    backbone: str, setting: str, size: int, batch: int, seconds: float, device: torch.device, dtype: str
) -> float:
    loaded = create_backbone(f"{backbone}:random", resolution=size)
    recipe = Recipe(setting)
    model = FinetuneModel(loaded.model, loaded.spec.default_readout, 4, recipe, size).to(device)
    channels_last = bool(getattr(loaded.model, "channels_last", False))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(model.param_groups(1e-4, 1e-5, None))
    scaler = torch.amp.GradScaler("cuda") if dtype == "fp16" else None
    x = torch.randn(batch, 3, size, size, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 4, (batch,), device=device)
    model.train()

    def step() -> None:
        with autocast(device, dtype):  # type: ignore[arg-type]
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()

    for _ in range(2):  # warm-up (oneDNN / cuDNN kernel choice)
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or done < 3 * batch:
        step()
        done += batch
    if device.type == "cuda":
        torch.cuda.synchronize()
    return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--settings", default=",".join(SETTINGS))
    args = parser.parse_args()
    settings = [s for s in args.settings.split(",") if s]

    cpu = torch.device("cpu")
    dtype = choose_dtype(cpu, args.dtype)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"CPU: {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, load average {load:.1f}; "
          f"compute dtype {dtype} (fmprobe.runtime.choose_dtype); batch {args.batch_size}, {args.size} px")  # fmt: skip
    print(f"{'backbone':<30} {'setting':<10} {'dtype':<5} {'train images/s':>14}")
    for setting in settings:
        rate = images_per_s(
            "efficientnet_lite0_imagenet", setting, args.size, args.batch_size, args.seconds, cpu, dtype
        )
        print(f"{'efficientnet_lite0_imagenet':<30} {setting:<10} {dtype:<5} {rate:>14.1f}", flush=True)

    if not torch.cuda.is_available():
        print("\nGPU: CUDA is not available on this machine; the GPU benchmark (DINOv2 ViT-B/14 at 224 px, full and "
              "linear, and EfficientNet-Lite0 per setting) runs where it is.")  # fmt: skip
        return
    gpu = choose_device("cuda")
    gdtype = choose_dtype(gpu, "auto")
    print(f"\nGPU: {torch.cuda.get_device_name(gpu)}, compute dtype {gdtype}, batch 64, 224 px")
    for backbone, gsettings in (("dinov2_vitb14", ("full", "linear")), ("efficientnet_lite0_imagenet", SETTINGS)):
        for setting in gsettings:
            rate = images_per_s(backbone, setting, 224, 64, args.seconds, gpu, gdtype)
            print(f"{backbone:<30} {setting:<10} {gdtype:<5} {rate:>14.1f}", flush=True)


if __name__ == "__main__":
    main()

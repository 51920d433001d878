"""How close does `fmprobe extract` (files on disk -> finished HDF5) get to the raw forward speed?

One run, same model, batch size and dtype: (1) raw forward throughput on tensors already in memory, the limit
for this machine; (2) end-to-end `fmprobe.extract` from PNG files on disk to a finished feature file.
The last line prints their ratio for each model. Target: >= 0.90 on CPU.

    python bench/extract_overhead.py [--images 768] [--batch-size 64] [--models efficientnet_lite0_imagenet,vit_small_patch16_224:random]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fmprobe.backbones import create_backbone  # noqa: E402
from fmprobe.datasets import load_dataset  # noqa: E402
from fmprobe.extract import extract_features as extract  # noqa: E402
from fmprobe.runtime import autocast, choose_device, choose_dtype  # noqa: E402


@torch.inference_mode()
def raw_forward(name: str, tensors: torch.Tensor, batch_size: int, dtype: str) -> float:
    """Images/s of the bare model over preprocessed tensors in memory (after one warm-up batch)."""
    backbone = create_backbone(name)
    model = backbone.model
    readouts = (backbone.spec.default_readout,)
    if model.channels_last:
        model = model.to(memory_format=torch.channels_last)
    device = torch.device("cpu")
    batches = list(torch.split(tensors, batch_size))
    with autocast(device, dtype):  # type: ignore[arg-type]
        model(batches[0].contiguous(memory_format=torch.channels_last) if model.channels_last else batches[0], readouts)
        start = time.perf_counter()
        for batch in batches:
            if model.channels_last:
                batch = batch.contiguous(memory_format=torch.channels_last)
            out = model(batch, readouts)
            out[readouts[0]].float().numpy()
        elapsed = time.perf_counter() - start
    return len(tensors) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=768, help="images in the on-disk data set (multiple of 4)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved measurement rounds (best of each)")
    parser.add_argument("--dtype", default="auto", help="compute dtype for both measurements (auto: as extract chooses)")
    parser.add_argument("--no-pixel-cache", dest="pixel_cache", action="store_false", help="skip the warm pixel-cache measurement")
    parser.add_argument("--models", default="efficientnet_lite0_imagenet,vit_small_patch16_224:random")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="fmprobe-bench-"))
    os.environ["FMPROBE_DATA"] = str(work / "data")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    spec = f"demo:{args.images // 4}"
    dataset = load_dataset(spec)  # generates the PNG files once, outside the timed region
    device = choose_device("auto")
    dtype = choose_dtype(device, "auto")
    print(f"machine: {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads; capability dtype {dtype}, --dtype {args.dtype}")
    print(f"data: {dataset.num_images} PNG files {dataset.splits['train'].source.describe(0)} ...; batch size {args.batch_size}")
    ratios = []
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        backbone = create_backbone(name)
        transform = backbone.transform()
        tensors = torch.stack(
            [transform(split.source.load(i)) for split in dataset.splits.values() for i in range(len(split))]
        )
        raws, ends = [], []
        used = dtype
        for _ in range(args.rounds):  # interleaved rounds, best of each: robust to a busy neighbour
            start = time.perf_counter()
            result = extract(spec, name, out=work / "features", batch_size=args.batch_size, dtype=args.dtype, force=True, progress=False)
            ends.append(result.n_images / (time.perf_counter() - start))
            used = result.compute_dtype  # the raw forward runs in the dtype extraction actually used
            raws.append(raw_forward(name, tensors, args.batch_size, used))
        raw, end_to_end = max(raws), max(ends)
        ratio = end_to_end / raw
        ratios.append((name, raw, end_to_end, ratio))
        print(f"{name}: raw forward {raw:.1f} img/s, end-to-end extract {end_to_end:.1f} img/s, ratio {ratio:.3f} (both {used})")
        if args.pixel_cache:  # a second backbone on the same data and geometry reads decoded pixels instead
            pixels = work / f"pixels-{name.replace(':', '-')}"
            extract(spec, name, out=pixels, batch_size=args.batch_size, dtype=used, pixel_cache=True, progress=False)
            start = time.perf_counter()
            warm = extract(spec, name, out=pixels, batch_size=args.batch_size, dtype=used, pixel_cache=True, force=True, progress=False)
            warm_rate = warm.n_images / (time.perf_counter() - start)
            ratios.append((f"{name} (warm pixel cache)", raw, warm_rate, warm_rate / raw))
            print(f"{name} with a warm pixel cache: end-to-end {warm_rate:.1f} img/s, ratio {warm_rate / raw:.3f} (both {used})")
    print("ratios (end-to-end / raw forward): " + ", ".join(f"{n} {r:.3f}" for n, _, _, r in ratios))


if __name__ == "__main__":
    main()

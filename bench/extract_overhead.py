"""How close does `fmprobe extract` (files on disk -> finished HDF5) get to the raw forward speed?

One run, same model, batch size and dtype: (1) raw forward throughput on tensors already in memory, the limit
for this machine; (2) end-to-end `fmprobe.extract` (first pass, no cache) from files on disk to a finished
feature file, from the demo's PNG files and from 1024x768 JPEG photos (decoded at reduced size: ``--decode
auto``). The header names the CPU, its bf16 capability and the compute dtype; the last line prints the ratios.
Target: >= 0.90 on CPU for EfficientNet-Lite0 and ViT-S at 224 from both sources.

Where decoding shares the model's cores (below 16 cores ``extract`` gives the model every core), each source's
line also prints the decode cost per image on one core and the ratio the machine allows at best if the model kept
all its threads busy: ``model core-ms / (model core-ms + decode core-ms)``.

    python bench/extract_overhead.py [--images 768] [--batch-size 64] [--models efficientnet_lite0_imagenet,vit_small_patch16_224:random]
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fmprobe._io import cpu_model, default_workers  # noqa: E402
from fmprobe.backbones import create_backbone  # noqa: E402
from fmprobe.datasets import load_dataset  # noqa: E402
from fmprobe.datasets.base import decode_image_bytes, load_image, reduces_jpeg  # noqa: E402
from fmprobe.extract import decoding_has_own_cores  # noqa: E402
from fmprobe.extract import extract_features as extract  # noqa: E402
from fmprobe.runtime import autocast, choose_device, choose_dtype, cpu_has_native_bf16  # noqa: E402

JPEG_SIZE = (1024, 768)


def write_jpeg_dataset(folder: Path, n: int, seed: int = 0) -> str:
    """``n`` photo-like 1024x768 JPEG files (smooth colour regions plus fine texture) and a manifest; its spec."""
    rng = np.random.default_rng(seed)
    (folder / "imgs").mkdir(parents=True, exist_ok=True)
    rows = []
    w, h = JPEG_SIZE
    for i in range(n):
        base = Image.fromarray(rng.integers(0, 256, (h // 32, w // 32, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
        noise = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).filter(ImageFilter.GaussianBlur(1.5))
        Image.blend(base, noise, 0.25).save(folder / "imgs" / f"{i:05d}.jpg", quality=90)
        rows.append([f"imgs/{i:05d}.jpg", ["a", "b"][i % 2], ["train", "train", "val", "test"][i % 4]])
    with (folder / "manifest.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows([["path", "label", "split"], *rows])
    return f"csv:{folder / 'manifest.csv'}"


def decode_ms(path: Path, name: str) -> tuple[float, float]:
    """Milliseconds to decode + resize one file for ``name``'s transform: full decode, reduced (draft) decode."""
    transform, data = create_backbone(name).transform(), path.read_bytes()
    times = []
    for draft in (None, transform.draft_request):
        start = time.perf_counter()
        for _ in range(20):
            transform.to_uint8(decode_image_bytes(data, str(path), draft))
        times.append((time.perf_counter() - start) / 20 * 1e3)
    return times[0], times[1]


def decode_core_ms(dataset, transform, n: int = 48) -> float:
    """Milliseconds of one core per image to read, decode and resize ``dataset``'s first ``n`` training images the
    way extraction does (reduced-size JPEG decoding where the source allows it)."""
    source = dataset.splits["train"].source
    draft = transform.draft_request if reduces_jpeg(source) else None
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a decoding worker
    try:
        start = time.perf_counter()
        for i in range(min(n, len(source))):
            transform.to_uint8(load_image(source, i, draft))
        return (time.perf_counter() - start) / min(n, len(source)) * 1e3
    finally:
        torch.set_num_threads(threads)


def shared_core_cap(raw_rate: float, decode_ms: float) -> float | None:
    """The best end-to-end/raw ratio when decoding runs on the model's own cores and the model keeps all its threads
    busy; None where extraction gives decoding workers cores of their own (see ``extract._model_threads``)."""
    if decoding_has_own_cores(default_workers()):
        return None
    model_ms = torch.get_num_threads() * 1e3 / raw_rate
    return model_ms / (model_ms + decode_ms)


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
    sources = {"PNG": f"demo:{args.images // 4}", "JPEG 1024x768": write_jpeg_dataset(work / "jpeg", args.images)}
    datasets = {label: load_dataset(spec) for label, spec in sources.items()}  # files written outside the timed region
    device = choose_device("auto")
    dtype = choose_dtype(device, "auto")
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"bf16: native={cpu_has_native_bf16()} (avx512_bf16/amx_bf16); capability dtype {dtype}, --dtype {args.dtype}")
    for label, dataset in datasets.items():
        print(f"data {label}: {dataset.num_images} files, e.g. {dataset.splits['train'].source.describe(0)}; batch size {args.batch_size}")
    ratios = []
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        full, drafted = decode_ms(Path(datasets["JPEG 1024x768"].splits["train"].source.describe(0)), name)
        print(f"{name}: JPEG decode+resize {full:.1f} ms full, {drafted:.1f} ms reduced (draft) per image")
        ratios += measure(name, sources, datasets, work, args)
    print("ratios (end-to-end / raw forward): " + ", ".join(f"{n} {r:.3f}" for n, _, _, r in ratios))


def measure(name: str, sources: dict[str, str], datasets: dict, work: Path, args: argparse.Namespace) -> list[tuple[str, float, float, float]]:
    """Raw forward and first-pass end-to-end per source, interleaved rounds, best of each; then a warm pixel cache."""
    backbone = create_backbone(name)
    transform = backbone.transform()
    png = datasets["PNG"]
    tensors = torch.stack([transform(split.source.load(i)) for split in png.splits.values() for i in range(len(split))])
    raws: list[float] = []
    ends: dict[str, list[float]] = {label: [] for label in sources}
    used = "fp32"
    for _ in range(args.rounds):  # interleaved rounds, best of each: robust to a busy neighbour
        for label, spec in sources.items():
            start = time.perf_counter()
            result = extract(spec, name, out=work / "features", batch_size=args.batch_size, dtype=args.dtype, force=True, progress=False)
            ends[label].append(result.n_images / (time.perf_counter() - start))
            used = result.compute_dtype  # the raw forward runs in the dtype extraction actually used
        raws.append(raw_forward(name, tensors, args.batch_size, used))
    raw = max(raws)
    out = []
    for label, rates in ends.items():
        out.append((f"{name} {label}", raw, max(rates), max(rates) / raw))
        print(f"{name} from {label}: raw forward {raw:.1f} img/s, end-to-end extract {max(rates):.1f} img/s, ratio {max(rates) / raw:.3f} (compute dtype {used})")
        decode = decode_core_ms(datasets[label], transform)
        cap = shared_core_cap(raw, decode)
        where = "decoding has cores of its own" if cap is None else f"at best {cap:.3f} with decoding on the model's cores"
        print(f"  decode+resize {decode:.1f} ms per image on one core; model {torch.get_num_threads()} threads: {where}")
    if args.pixel_cache:  # a second backbone on the same data and geometry reads decoded pixels instead
        pixels = work / f"pixels-{name.replace(':', '-')}"
        extract(sources["PNG"], name, out=pixels, batch_size=args.batch_size, dtype=used, pixel_cache=True, progress=False)
        start = time.perf_counter()
        warm = extract(sources["PNG"], name, out=pixels, batch_size=args.batch_size, dtype=used, pixel_cache=True, force=True, progress=False)
        warm_rate = warm.n_images / (time.perf_counter() - start)
        out.append((f"{name} PNG (warm pixel cache)", raw, warm_rate, warm_rate / raw))
        print(f"{name} with a warm pixel cache: end-to-end {warm_rate:.1f} img/s, ratio {warm_rate / raw:.3f} (compute dtype {used})")
    return out


if __name__ == "__main__":
    main()

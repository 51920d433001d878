"""A soak at 100,000 images: memory flat in N, one file per cache, a fast cache hit, probing within 4 GiB.

Generates N small PNGs (64x64, 4 classes, seeded) with a CSV manifest, extracts them with a small backbone at a
small resolution in a child process, and prints: images/s over the first and last 10% of the run, peak RSS at
1,000 and at N images and their ratio (target <= 1.2), the number of files the cache uses (target 1), the wall
time of a cache hit, and the peak RSS of probing the N features with logreg and kNN (target < 4 GiB).

    python bench/soak.py [--images 100000] [--backbone efficientnet_lite0_imagenet:random] [--resolution 32]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]

CHILD_EXTRACT = r"""
import json, sys, time
from fmprobe.extract import extract_features
from fmprobe.store.journal import Journal
stamps = []
append = Journal.append
def timed(self, batch):
    append(self, batch)
    stamps.append((time.perf_counter(), batch.count))
Journal.append = timed
spec, backbone, resolution, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
result = extract_features(spec, backbone, resolution=resolution, out=out, batch_size=256, progress=False)
rss = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(json.dumps({"path": str(result.path), "stamps": stamps, "vmhwm_kib": rss, "dtype": result.compute_dtype}))
"""

CHILD_PROBE = r"""
import json, sys
from fmprobe.probing import probe_features
probe_features([sys.argv[1]], probes=[sys.argv[2]], out=sys.argv[3], n_resamples=200, progress=False)
rss = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(json.dumps({"vmhwm_kib": rss}))
"""


def generate(folder: Path, n: int, seed: int = 0) -> Path:
    """N 64x64 RGB PNGs whose class is a bright quadrant, plus a manifest (path,label)."""
    rng = np.random.default_rng(seed)
    (folder / "img").mkdir(parents=True, exist_ok=True)
    rows = []
    for start in range(0, n, 1000):
        count = min(1000, n - start)
        labels = rng.integers(0, 4, count)
        pixels = rng.integers(0, 140, (count, 64, 64, 3), dtype=np.uint8)
        for i, label in enumerate(labels):
            y, x = divmod(int(label), 2)
            pixels[i, 32 * y : 32 * y + 32, 32 * x : 32 * x + 32] += 100
            name = f"img/{start + i:06d}.png"
            Image.fromarray(pixels[i]).save(folder / name, compress_level=1)
            rows.append((name, f"c{label}"))
        if start % 20000 == 0:
            print(f"  generated {start + count}/{n}", file=sys.stderr)
    manifest = folder / "manifest.csv"
    with manifest.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label"])
        writer.writerows(rows)
    return manifest


def subset_manifest(manifest: Path, n: int) -> Path:
    lines = manifest.read_text().splitlines()
    small = manifest.with_name(f"manifest_{n}.csv")
    small.write_text("\n".join(lines[: n + 1]) + "\n")
    return small


def child(code: str, *args: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, cwd=ROOT)
    if run.returncode != 0:
        raise SystemExit(run.stderr[-3000:])
    return json.loads(run.stdout.strip().splitlines()[-1])


def rate(stamps: list, fraction: float, last: bool) -> float:
    n = len(stamps)
    k = max(2, int(n * fraction))
    part = stamps[-k:] if last else stamps[:k]
    images = sum(c for _, c in part[1:])
    return images / (part[-1][0] - part[0][0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--backbone", default="efficientnet_lite0_imagenet:random")
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--work", type=Path, default=None, help="folder for images and caches (default: a temp dir)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="fmprobe-soak-"))
    os.environ["FMPROBE_DATA"] = str(work / "data")
    manifest = work / "images" / "manifest.csv"
    if not manifest.exists():
        t = time.perf_counter()
        generate(work / "images", args.images)
        print(f"generated {args.images} PNGs in {time.perf_counter() - t:.0f}s", file=sys.stderr)
    small = subset_manifest(manifest, 1000)
    few = child(CHILD_EXTRACT, f"csv:{small}", args.backbone, str(args.resolution), str(work / "features-1k"))
    start = time.perf_counter()
    many = child(CHILD_EXTRACT, f"csv:{manifest}", args.backbone, str(args.resolution), str(work / "features"))
    wall = time.perf_counter() - start
    cache = Path(many["path"])
    files = sorted(p.name for p in cache.parent.iterdir())
    sys.path.insert(0, str(ROOT))
    from fmprobe.extract import extract_features

    t = time.perf_counter()
    hit = extract_features(f"csv:{manifest}", args.backbone, resolution=args.resolution, out=work / "features", progress=False)
    hit_seconds = time.perf_counter() - t
    assert hit.cache_hit
    probes = {p: child(CHILD_PROBE, str(cache), p, str(work / f"results-{p}")) for p in ("logreg", "knn")}
    from fmprobe.store import FeatureFile

    dim = FeatureFile(cache).load("test").features.shape[1]
    gib = 1024 * 1024
    print(f"machine: {os.cpu_count()} cores; backbone {args.backbone} at {args.resolution}px, compute dtype {many['dtype']}")
    print(f"extraction of {args.images} images: {wall:.0f}s wall; images/s first 10% {rate(many['stamps'], 0.1, False):.0f}, last 10% {rate(many['stamps'], 0.1, True):.0f}")
    print(f"peak RSS: 1,000 images {few['vmhwm_kib'] / 1024:.0f} MiB, {args.images} images {many['vmhwm_kib'] / 1024:.0f} MiB, ratio {many['vmhwm_kib'] / few['vmhwm_kib']:.2f} (target <= 1.2)")
    print(f"files used by the cache: {len(files)} ({', '.join(files)}) (target 1)")
    print(f"cache hit on the finished file: {hit_seconds:.2f}s wall")
    for name, info in probes.items():
        print(f"probe {name} on {args.images} x {dim} float16: peak RSS {info['vmhwm_kib'] / gib:.2f} GiB (target < 4 GiB)")


if __name__ == "__main__":
    main()

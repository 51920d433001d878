"""The built-in demo data set: synthetic skin-lesion-like images, generated from a seed, written as PNG files.

SYNTHETIC, not medical data. Four classes differ by visual structure in the spirit of the ABCD rule of
dermoscopy, not by a single pixel statistic: lesion size, darkness, position, skin tone and noise are drawn
from the same distributions in every class, so a classifier has to see shape and texture:

- ``regular``: round, smooth border, one colour;
- ``irregular_border``: jagged, asymmetric border, one colour;
- ``variegated``: round, smooth border, patches of several colours (mean colour matched to the others);
- ``reticular``: round, smooth border, a pigment network (rotated grid of dark lines) inside.

Each synthetic "patient" contributes 1-3 images with the same skin tone; the manifest's ``group`` column holds
the patient id, so fmprobe's split keeps patients whole, like a real study should.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
from PIL import Image

from fmprobe._io import atomic_write, atomic_write_text
from fmprobe.datasets.base import Dataset
from fmprobe.datasets.manifest import load_manifest
from fmprobe.datasets.sources import DatasetSource, OptionSpec
from fmprobe.errors import DatasetError

CLASSES = ("regular", "irregular_border", "variegated", "reticular")
IMAGE_SIZE = 96
DEFAULT_PER_CLASS = 150
GENERATOR_VERSION = 2


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [0, 1]: a coarse random grid upsampled bilinearly."""
    coarse = Image.fromarray((rng.random((cells, cells)) * 255).astype(np.uint8))
    return np.asarray(coarse.resize((size, size), Image.BILINEAR), dtype=np.float32) / 255.0


def render_lesion(rng: np.random.Generator, label: int, skin: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
    """One ``size``x``size`` RGB uint8 image of class ``label``."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cx, cy = size / 2 + rng.normal(0, size * 0.06, 2)
    radius = rng.uniform(0.18, 0.3) * size
    theta = np.arctan2(yy - cy, xx - cx)
    dist = np.hypot(xx - cx, yy - cy)

    # Border: a few gentle low-order bumps for every class; many strong high-order ones for irregular borders.
    boundary = np.ones_like(theta)
    for k in (2, 3):
        boundary += rng.uniform(0.0, 0.05) * np.sin(k * theta + rng.uniform(0, 2 * np.pi))
    if CLASSES[label] == "irregular_border":
        for k in rng.choice(np.arange(5, 14), size=4, replace=False):
            boundary += rng.uniform(0.03, 0.08) * np.sin(k * theta + rng.uniform(0, 2 * np.pi))
        boundary += 0.12 * np.clip(np.cos(theta - rng.uniform(0, 2 * np.pi)), 0, None)  # asymmetry
    mask = 1.0 / (1.0 + np.exp((dist - radius * boundary) / 1.2))

    darkness = rng.uniform(0.35, 0.65)
    base = np.array([0.45, 0.28, 0.18]) * (1.3 - darkness)
    lesion = np.broadcast_to(base, (size, size, 3)).copy()
    if CLASSES[label] == "variegated":
        palette = np.array([[0.22, 0.12, 0.08], [0.55, 0.38, 0.3], [0.35, 0.38, 0.5], [0.6, 0.25, 0.22]])
        palette = 0.45 * (palette - palette.mean(0)) + base  # subtle, same average colour as a one-colour lesion
        field = np.stack([_smooth_noise(rng, size, 5) for _ in range(len(palette))], axis=-1)
        patches = np.argmax(field, axis=-1)
        lesion = palette[patches]
    elif CLASSES[label] == "reticular":
        angle = rng.uniform(0, np.pi)
        period = rng.uniform(5.0, 8.0)
        u = (xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period
        v = (-xx * np.sin(angle) + yy * np.cos(angle)) * 2 * np.pi / period
        lines = np.clip(np.maximum(np.cos(u), np.cos(v)), 0, 1) ** 4
        lesion = lesion * (1.1 - 0.22 * lines[..., None])  # faint, mean-preserving darkening along the network

    background = skin[None, None, :] * (0.92 + 0.16 * _smooth_noise(rng, size, 3))[..., None]
    image = background * (1 - mask[..., None]) + lesion * mask[..., None]
    for _ in range(rng.integers(0, 3)):  # hairs in every class, so thin dark lines alone mean nothing
        a, b = rng.uniform(0, size, 2), rng.uniform(0, size, 2)
        t = np.clip(((xx - a[0]) * (b[0] - a[0]) + (yy - a[1]) * (b[1] - a[1])) / (np.sum((b - a) ** 2) + 1e-6), 0, 1)
        d = np.hypot(xx - a[0] - t * (b[0] - a[0]), yy - a[1] - t * (b[1] - a[1]))
        image = image * (1 - 0.6 * np.exp(-(d**2) / 0.8))[..., None]
    image = image + rng.normal(0, 0.05, image.shape)
    return (np.clip(image, 0, 1) * 255).astype(np.uint8)


def generate(folder: Path, per_class: int = DEFAULT_PER_CLASS, seed: int = 0) -> Path:
    """Write the demo images and then ``manifest.csv`` into ``folder``; returns the manifest path.

    Every file is written atomically and the manifest last, so its presence marks a complete folder. Two
    processes generating at once (torchrun ranks) write identical files, each replacing the other's whole."""
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    labels = np.repeat(np.arange(len(CLASSES)), per_class)
    labels = labels[rng.permutation(len(labels))]
    rows = []
    patient, left = 0, 0
    skin = np.zeros(3)
    for index, label in enumerate(labels):
        if left == 0:
            patient += 1
            left = int(rng.integers(1, 4))
            skin = np.array([0.93, 0.78, 0.66]) * rng.uniform(0.75, 1.05) + rng.normal(0, 0.02, 3)
        left -= 1
        name = f"images/lesion_{index:05d}.png"
        image = Image.fromarray(render_lesion(rng, int(label), skin))
        atomic_write(folder / name, lambda tmp, image=image: image.save(tmp, format="PNG", compress_level=1))
        rows.append((name, CLASSES[label], f"patient_{patient:04d}"))
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(["path", "label", "group"])
    writer.writerows(rows)
    atomic_write_text(folder / "manifest.csv", text.getvalue())
    return folder / "manifest.csv"


def demo_folder(per_class: int, seed: int) -> Path:
    from fmprobe.datasets.medmnist import data_root

    return data_root() / f"demo-v{GENERATOR_VERSION}-{per_class}x{len(CLASSES)}-seed{seed}"


def load_demo(argument: str, spec: str, seed: int = 0) -> Dataset:
    """``demo`` or ``demo:<images per class>``: generate once (deterministic by seed) and load as a manifest."""
    try:
        per_class = int(argument) if argument else DEFAULT_PER_CLASS
    except ValueError:
        raise DatasetError(f"demo size {argument!r} is not a number; use e.g. demo or demo:50 (images per class).") from None
    if per_class < 10:
        raise DatasetError(f"demo:{per_class} is too small; use at least 10 images per class.")
    folder = demo_folder(per_class, seed)
    manifest = folder / "manifest.csv"
    if not manifest.exists():
        generate(folder, per_class, seed)
    return load_manifest(manifest, spec, classes=list(CLASSES), seed=seed)


SOURCE = DatasetSource(
    name="demo",
    loader=load_demo,
    takes_path=False,
    example="demo:50",
    description=f"SYNTHETIC skin-lesion-like images, {len(CLASSES)} classes, generated from the seed (demo[:<images per class>])",
    options=(OptionSpec("seed", 0, "seed of the generated images and of their split", int),),
)

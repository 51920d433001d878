"""Training and evaluation images, built around the backbone's own transform, and batches whose content depends
only on (seed, epoch).

Eval: exactly the extraction transform (:class:`~fmprobe.backbones.ImageTransform` of the weights' preprocessing:
crop_pct, resize mode, interpolation), so fine-tuned and probed rows of one backbone see the same pixels.
Train: RandomResizedCrop at the backbone's size with its interpolation -> horizontal and vertical flips ->
ColorJitter(0.2, 0.2, 0.1, 0.1) with p=0.8. Both send uint8 pixels; the backbone's normalisation is applied to
whole batches in the main process (``ImageTransform.normalise_batch``, which also zeroes SAM-style padding).

Determinism: the sample order of epoch e comes from a torch.Generator seeded with (seed, e); every sample's
augmentation draws from its own seed (seed, e, index), so it does not depend on which DataLoader worker loads it,
on the number of workers, or on what ran before. A resumed run therefore sees exactly the batches an uninterrupted
run sees.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import functional as TF

from fmprobe.backbones import ImageTransform
from fmprobe.backbones.preprocess import INTERPOLATIONS
from fmprobe.datasets.base import FileSource, Split
from fmprobe.errors import DatasetError, ImageError

Pixels = tuple[torch.Tensor, tuple[int, int]]  # uint8 [3, S, S] and the valid (height, width) inside it


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers (numpy's SeedSequence: well mixed, stable across machines and versions)."""
    return int(
        np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(2, np.uint64)[0] >> np.uint64(1)
    )


class TrainAugment:
    """PIL image + per-sample seed -> uint8 ``[3, S, S]`` at the backbone's size and interpolation. Picklable."""

    def __init__(self, transform: ImageTransform) -> None:
        self.size = transform.config.size
        self.mode = INTERPOLATIONS[transform.config.interpolation]
        self.jitter = T.ColorJitter(0.2, 0.2, 0.1, 0.1)

    def __call__(self, image: Image.Image, seed: int) -> Pixels:
        s = self.size
        with torch.random.fork_rng(devices=[]):  # torchvision draws from the global RNG: give it this sample's seed
            torch.manual_seed(seed)
            i, j, h, w = T.RandomResizedCrop.get_params(image, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3))
            image = TF.resized_crop(image, i, j, h, w, [s, s], interpolation=self.mode, antialias=True)
            if torch.rand(1).item() < 0.5:
                image = TF.hflip(image)
            if torch.rand(1).item() < 0.5:
                image = TF.vflip(image)
            if torch.rand(1).item() < 0.8:
                image = self.jitter(image)
        return TF.pil_to_tensor(image), (s, s)


class Samples(torch.utils.data.Dataset):
    """Images of several splits behind one loader. Items are requested as (split index, row, seed): split 0 is
    augmented for training, the others get the backbone's eval transform. Errors travel as values so the main
    process can name the file."""

    def __init__(self, splits: Sequence[Split], transform: ImageTransform) -> None:
        self.sources = [s.source for s in splits]
        self.train, self.transform = TrainAugment(transform), transform

    def pixels(self, split: int, image: Image.Image, seed: int) -> Pixels:
        return self.train(image, seed) if split == 0 else self.transform.to_uint8(image)

    def __len__(self) -> int:
        return sum(len(s) for s in self.sources)

    def __getitem__(self, item: tuple[int, int, int]):
        split, row, seed = item
        source = self.sources[split]
        try:
            return row, self.pixels(split, source.load(row), seed), None
        except ImageError as err:
            return row, None, str(err)
        except Exception as err:  # name the file, whatever the decoder raised
            return row, None, f"{source.describe(row)}: unexpected error while loading ({type(err).__name__}: {err})"


Batch = tuple[list[int], torch.Tensor | None, torch.Tensor | None, str | None]  # rows, uint8 pixels, valid, error


def collate(items: list) -> Batch:
    rows = [r for r, _, _ in items]
    errors = [e for _, _, e in items if e is not None]
    if errors:
        return rows, None, None, errors[0]
    pixels = torch.stack([p for _, (p, _), _ in items])
    valid = torch.tensor([hw for _, (_, hw), _ in items], dtype=torch.int64)
    return rows, pixels, valid, None


class Batches:
    """A batch sampler whose plan is replaced every epoch (persistent workers keep running across epochs)."""

    def __init__(self) -> None:
        self.plan: list[list[tuple[int, int, int]]] = []

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        return iter(self.plan)

    def __len__(self) -> int:
        return len(self.plan)


def epoch_order(n: int, seed: int, epoch: int, sample_weights: np.ndarray | None = None) -> torch.Tensor:
    """The sample order of one epoch: a permutation, or n balanced draws with replacement."""
    g = torch.Generator().manual_seed(derive_seed(seed, epoch, 1))
    if sample_weights is not None:
        return torch.multinomial(torch.as_tensor(sample_weights, dtype=torch.float64), n, replacement=True, generator=g)
    return torch.randperm(n, generator=g)


def train_plan(
    n: int,
    batch_size: int,
    seed: int,
    epoch: int,
    rank: int = 0,
    world: int = 1,
    sample_weights: np.ndarray | None = None,
) -> tuple[list[list[tuple[int, int, int]]], list[int]]:
    """This rank's share of every global batch of epoch ``epoch`` ((0, row, augmentation seed) items), and the
    size of each global batch.

    A global batch of ``batch_size`` is split over the ranks (sizes differ by at most one), so the effective batch
    is the same for any number of processes. A last batch smaller than max(2, world) is dropped (BatchNorm needs two
    samples, and every rank needs one).
    """
    order = epoch_order(n, seed, epoch, sample_weights).tolist()
    plan, sizes = [], []
    for start in range(0, n, batch_size):
        batch = order[start : start + batch_size]
        if len(batch) < max(2, world):
            break
        mine = np.array_split(np.arange(len(batch)), world)[rank]
        plan.append([(0, int(batch[i]), derive_seed(seed, epoch, 2, int(batch[i]), start + int(i))) for i in mine])
        sizes.append(len(batch))
    return plan, sizes


def eval_plan(split: int, n: int, batch_size: int, rank: int = 0, world: int = 1) -> list[list[tuple[int, int, int]]]:
    """Consecutive batches of this rank's contiguous share of the rows of split ``split`` (no seeds needed)."""
    rows = np.array_split(np.arange(n), world)[rank]
    return [[(split, int(r), 0) for r in rows[i : i + batch_size]] for i in range(0, len(rows), batch_size)]


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # decoding workers must not compete with the model's threads


def make_loader(samples: Samples, batches: Batches, workers: int, pin: bool, generator: torch.Generator):
    """One loader (one set of persistent workers) for the whole run; ``batches.plan`` says what comes next."""
    return torch.utils.data.DataLoader(
        samples,
        batch_sampler=batches,
        num_workers=workers,
        collate_fn=collate,
        worker_init_fn=_worker_init if workers else None,
        persistent_workers=bool(workers),
        pin_memory=pin,
        prefetch_factor=4 if workers else None,
        generator=generator,
    )


def check_files_exist(splits: Sequence[Split], dataset_name: str) -> None:
    missing = [p for s in splits if isinstance(s.source, FileSource) for p in s.source.paths if not p.exists()]
    if missing:
        raise DatasetError(
            f"{len(missing)} image file(s) of {dataset_name} are missing, e.g. {', '.join(map(str, missing[:3]))}. "
            "Restore them or fix the dataset listing."
        )


def class_weights(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """n / (C * n_c) per class (multi-label: per label, from positives); 1 where a class is absent."""
    if labels.ndim == 2:
        positives = labels.sum(axis=0).astype(np.float64)
        return np.where(positives > 0, len(labels) / (2.0 * np.maximum(positives, 1)), 1.0)
    counts = np.bincount(labels.astype(np.int64), minlength=num_classes).astype(np.float64)
    return np.where(counts > 0, len(labels) / (num_classes * np.maximum(counts, 1)), 1.0)

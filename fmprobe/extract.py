"""The only code that moves images through a network: dataset x frozen backbone -> one HDF5 feature file.

Flow: fingerprint (cheap: no model is built) -> cache hit? -> lock -> resume the journal -> stream batches
through a multi-worker DataLoader under ``inference_mode`` and autocast -> append each batch durably ->
write the HDF5 file from the journal and rename it into place.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import timm
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

import fmprobe
from fmprobe.backbones import ImageTransform, LoadedBackbone, create_backbone, get_spec, parse_name, resolve_weights
from fmprobe.datasets import Dataset, load_dataset
from fmprobe.datasets.base import FileSource, ImageSource
from fmprobe.errors import CacheError, DatasetError, FmprobeError, ImageError
from fmprobe.runtime import autocast, choose_device, choose_dtype
from fmprobe.store import Batch, FeatureFile, Fingerprint, Journal, SplitLayout, exclusive, write_feature_file

ON_ERROR = ("fail", "skip")
FEATURE_DTYPES = ("float16", "float32")
Log = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


@dataclass(frozen=True)
class ExtractResult:
    path: Path
    cache_hit: bool
    key: str
    compute_dtype: str
    device: str
    n_images: int
    n_skipped: int
    seconds: float

    @property
    def images_per_s(self) -> float:
        return self.n_images / self.seconds if self.seconds > 0 else float("nan")


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "x"


def cache_path(out: Path, dataset_name: str, backbone: str, key: str) -> Path:
    """``<out>/<dataset>/<backbone>__<key>.h5``: readable, and unique per fingerprint."""
    return out / slug(dataset_name) / f"{slug(backbone)}__{key}.h5"


class _Rows(torch.utils.data.Dataset):
    """All splits' rows behind one global index (one DataLoader, one set of workers for the whole run).

    Items are (split index, row, uint8 pixels | None, valid size, error | None): errors travel as values so the
    main process decides (fail naming the file, or record and skip); pixels stay uint8 until the main process
    normalises the whole batch, which quarters the bytes workers send.
    """

    def __init__(self, sources: list[ImageSource], transform: ImageTransform) -> None:
        self.sources, self.transform = sources, transform
        self.offsets = np.cumsum([0] + [len(s) for s in sources])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, index: int):
        split = int(np.searchsorted(self.offsets, index, side="right") - 1)
        row = index - int(self.offsets[split])
        source = self.sources[split]
        try:
            pixels, valid = self.transform.to_uint8(source.load(row))
            return split, row, pixels, valid, None
        except ImageError as err:
            return split, row, None, (0, 0), str(err)
        except Exception as err:  # a decoder bug on one file must not lose the run: report it by name
            return split, row, None, (0, 0), f"{source.describe(row)}: unexpected error while loading ({type(err).__name__}: {err})"


def _batches(offsets: np.ndarray, lengths: list[int], done: list[int], batch_size: int) -> list[list[int]]:
    """Global indices per batch; batches never cross splits and start at multiples of ``batch_size`` within one,
    so a resumed run sees exactly the batches an uninterrupted run would have."""
    out = []
    for split, (length, start) in enumerate(zip(lengths, done)):
        for first in range(start, length, batch_size):
            out.append(list(range(int(offsets[split]) + first, int(offsets[split]) + min(first + batch_size, length))))
    return out


def _collate(items: list):
    split = items[0][0]
    rows = [item[1] for item in items]
    ok = [item for item in items if item[2] is not None]
    pixels = torch.stack([item[2] for item in ok]) if ok else None
    valid = torch.tensor([item[3] for item in ok]) if ok else None
    errors = {item[1]: item[4] for item in items if item[4] is not None}
    return split, rows, pixels, valid, errors


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # decoding workers must not compete with the model's threads


def default_workers() -> int:
    return max(0, min(4, (os.cpu_count() or 1) - 1))


def weights_label(weights: str | Path | None, resolved: tuple[Path | None, str]) -> str:
    """How the results table names the weights: random, pretrained (the published file), or the file used."""
    if resolved[0] is None:
        return "random"
    if weights is None:
        return "pretrained"
    return f"{Path(weights).name}@{resolved[1].removeprefix('sha256:')[:8]}"


def check_output_folder(folder: Path) -> None:
    """Fail before any work if the cache folder cannot be written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CacheError(f"cannot create output folder {folder} ({err.strerror}). Choose another with --out.") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CacheError(f"output folder {folder} is not writable. Fix its permissions or choose another with --out.")


def _check_files_exist(dataset: Dataset) -> None:
    missing = [p for s in dataset.splits.values() if isinstance(s.source, FileSource) for p in s.source.paths if not p.exists()]
    if missing:
        raise DatasetError(
            f"{len(missing)} image file(s) of {dataset.name} are missing, e.g. {', '.join(map(str, missing[:3]))}. "
            "Restore them, fix the dataset listing, or run with --on-error skip to leave them out (recorded)."
        )


def _finalise(
    path: Path,
    journal: Journal,
    dataset: Dataset,
    fingerprint: Fingerprint,
    dims: dict[str, int],
    batch_size: int,
    weights_label: str,
    images_per_s: float,
) -> None:
    skipped: dict[str, dict[int, str]] = {name: {} for name in dataset.splits}
    for batch in journal.batches():
        skipped[batch.split].update({batch.start + k: v for k, v in batch.skipped.items()})
    attrs = {
        "fingerprint": fingerprint.to_json(),
        "key": fingerprint.key,
        "schema_version": fingerprint.schema_version,
        "task": dataset.task,
        "class_names": json.dumps(list(dataset.class_names)),
        "primary_metric": dataset.primary_metric,
        "dataset_spec": dataset.spec,
        "readouts": json.dumps(list(fingerprint.readouts)),
        "backbone": fingerprint.backbone,
        "weights_label": weights_label,
        "compute_dtype": fingerprint.compute_dtype,
        "batch_size": batch_size,
        "fmprobe_version": fmprobe.__version__,
        "torch_version": torch.__version__,
        "timm_version": timm.__version__,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "images_per_s": images_per_s,  # measured; `fmprobe study --dry-run` uses it for cost estimates
    }
    layouts = {name: SplitLayout(split.ids, split.labels) for name, split in dataset.splits.items()}
    write_feature_file(
        path, attrs, layouts, fingerprint.readouts, dims, fingerprint.feature_dtype, journal.batches(), skipped
    )


def extract_features(
    dataset: str | Dataset,
    backbone: str,
    *,
    weights: str | Path | None = None,
    resolution: int | None = None,
    readouts: tuple[str, ...] | list[str] | None = None,
    batch_size: int = 64,
    device: str = "auto",
    dtype: str = "auto",
    feature_dtype: str = "float16",
    out: str | Path = "features",
    on_error: str = "fail",
    force: bool = False,
    num_workers: int | None = None,
    max_images_per_split: int | None = None,
    progress: bool = True,
    log: Log = _stderr,
) -> ExtractResult:
    """Extract (or find in the cache) the embeddings of every image of ``dataset`` under ``backbone``."""
    started = time.perf_counter()
    if on_error not in ON_ERROR:
        raise FmprobeError(f"--on-error {on_error!r}: use fail or skip.")
    if feature_dtype not in FEATURE_DTYPES:
        raise FmprobeError(f"--feature-dtype {feature_dtype!r}: use float16 or float32.")
    if batch_size < 1:
        raise FmprobeError(f"--batch-size {batch_size}: must be at least 1.")
    out = Path(out)
    check_output_folder(out)
    data = dataset if isinstance(dataset, Dataset) else load_dataset(dataset, max_images_per_split)
    base, _ = parse_name(backbone)
    spec = get_spec(base)
    chosen = tuple(readouts) if readouts else (spec.default_readout,)
    unknown = [r for r in chosen if not spec.supports(r)]
    if unknown:
        raise FmprobeError(f"readout(s) {unknown} do not exist for {backbone!r}; available: {', '.join(spec.readouts + spec.readout_patterns)}.")
    resolved = resolve_weights(backbone, weights)
    torch_device = choose_device(device)
    compute_dtype = choose_dtype(torch_device, dtype)
    size = int(resolution or spec.native_resolution)
    fingerprint = Fingerprint(
        dataset=data.name,
        dataset_digest=data.content_digest,
        backbone=backbone,
        weights_digest=resolved[1],
        preprocess=spec.preprocess.at(size).to_dict(),
        resolution=size,
        readouts=chosen,
        compute_dtype=compute_dtype,
        feature_dtype=feature_dtype,
        image_conversion=str(data.extra.get("image_conversion", "pil-rgb8")),  # e.g. how DICOM was windowed
    )
    path = cache_path(out, data.name, backbone, fingerprint.key)
    path.parent.mkdir(parents=True, exist_ok=True)
    n_total = data.num_images

    def hit() -> ExtractResult | None:
        if force or not path.exists():
            return None
        feature_file = FeatureFile(path, expected_key=fingerprint.key)  # raises if damaged: never served
        n_skipped = sum(len(feature_file.skipped(s)) for s in feature_file.splits)
        log(f"cache hit: {path} ({n_total} images, {compute_dtype}); use --force to recompute")
        return ExtractResult(path, True, fingerprint.key, compute_dtype, str(torch_device), n_total, n_skipped, time.perf_counter() - started)

    found = hit()
    if found:
        return found
    lock_path = path.with_name(path.name + ".lock")
    with exclusive(lock_path):
        found = hit()  # another process may have finished it while we waited
        if found:
            return found
        if on_error == "fail":
            _check_files_exist(data)
        journal_path = path.with_name(path.name + ".journal")
        if force:
            path.unlink(missing_ok=True)
            journal_path.unlink(missing_ok=True)
        loaded = create_backbone(backbone, resolution=size, resolved=resolved)
        model = loaded.model.to(torch_device)
        if model.channels_last:
            model = model.to(memory_format=torch.channels_last)
        dims = model.embed_dims(chosen, size)
        header = {
            "fingerprint": fingerprint.to_json(),
            "readouts": list(chosen),
            "dims": dims,
            "feature_dtype": feature_dtype,
            "batch_size": batch_size,
            "splits": {name: len(split) for name, split in data.splits.items()},
        }
        journal, committed = Journal.open(journal_path, header)
        if int(journal.header["batch_size"]) != batch_size:  # type: ignore[call-overload]
            batch_size = int(journal.header["batch_size"])  # type: ignore[call-overload]
            log(f"resuming with batch size {batch_size}, as the run was started, so the result is identical")
        done = {name: 0 for name in data.splits}
        n_skipped = 0
        for batch in committed:
            done[batch.split] = max(done[batch.split], batch.start + batch.count)
            n_skipped += len(batch.skipped)
        n_done = sum(done.values())
        if n_done:
            log(f"resuming {path.name}: {n_done}/{n_total} images already extracted")
        log(f"extracting {data.name} with {backbone} at {size}px on {torch_device} ({compute_dtype}, batch {batch_size})")
        bar = tqdm(total=n_total, initial=n_done, unit="img", desc=f"{backbone}", disable=not progress, file=sys.stderr, dynamic_ncols=True, mininterval=0.5)
        t0 = time.perf_counter()
        try:
            n_skipped += _run(loaded, model, data, done, journal, chosen, batch_size, torch_device, compute_dtype, on_error, num_workers, bar)
            bar.close()
            rate = (n_total - n_done) / max(time.perf_counter() - t0, 1e-9) if n_total > n_done else 0.0
            _finalise(path, journal, data, fingerprint, dims, batch_size, weights_label(weights, resolved), rate)
        except KeyboardInterrupt:
            bar.close()
            log(f"interrupted: the batches extracted so far are kept in {journal_path.name}; run the same command again to resume")
            raise
        finally:
            journal.close()
        journal_path.unlink(missing_ok=True)
        elapsed = time.perf_counter() - t0
        computed = n_total - n_done
        lock_path.unlink(missing_ok=True)  # safe: a waiter re-checks and finds the finished file
        log(f"wrote {path} ({computed} images in {elapsed:.1f}s, {computed / max(elapsed, 1e-9):.1f} img/s, {compute_dtype}; {n_skipped} skipped)")
    return ExtractResult(path, False, fingerprint.key, compute_dtype, str(torch_device), n_total, n_skipped, time.perf_counter() - started)


@torch.inference_mode()
def _run(
    loaded: LoadedBackbone,
    model: torch.nn.Module,
    data: Dataset,
    done: dict[str, int],
    journal: Journal,
    readouts: tuple[str, ...],
    batch_size: int,
    device: torch.device,
    compute_dtype: str,
    on_error: str,
    num_workers: int | None,
    bar: tqdm,
) -> int:
    transform = loaded.transform()
    workers = default_workers() if num_workers is None else num_workers
    names = list(data.splits)
    sources = [data.splits[n].source for n in names]
    rows = _Rows(sources, transform)
    batches = _batches(rows.offsets, [len(s) for s in sources], [done[n] for n in names], batch_size)
    if not batches:
        return 0
    loader = DataLoader(
        rows,
        batch_sampler=batches,
        num_workers=workers,
        collate_fn=_collate,
        worker_init_fn=_worker_init if workers else None,
        pin_memory=device.type == "cuda",
        prefetch_factor=4 if workers else None,
    )
    n_skipped = 0
    out_dtype = np.dtype(journal.header["feature_dtype"])  # type: ignore[arg-type]
    dims: dict[str, int] = journal.header["dims"]  # type: ignore[assignment]
    for split_index, batch_rows, pixels, valid, errors in loader:
        name = names[split_index]
        if errors and on_error == "fail":
            first = errors[min(errors)]
            raise ImageError(
                f"{first}\n(The {sum(done.values())} images before it are kept: re-run with --on-error skip to "
                "resume from there and record this file as skipped. Repairing the file changes the dataset's "
                "content, and so its cache key: the extraction then starts afresh.)"
            )
        if pixels is not None:
            images = transform.normalise_batch(pixels.to(device, non_blocking=True), valid.to(device))
            if model.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with autocast(device, compute_dtype):  # type: ignore[arg-type]
                out = model(images, readouts)
            features = {r: out[r].float().cpu().numpy().astype(out_dtype) for r in readouts}
        else:
            features = {r: np.zeros((0, int(dims[r])), dtype=out_dtype) for r in readouts}
        start = batch_rows[0]
        skipped = {row - start: reason for row, reason in errors.items()}
        for reason in errors.values():
            bar.write(f"skipped: {reason.splitlines()[0]}")
        journal.append(Batch(name, start, len(batch_rows), skipped, features))
        done[name] = start + len(batch_rows)
        n_skipped += len(skipped)
        bar.update(len(batch_rows))
    return n_skipped

"""The only code that moves images through a network: dataset x frozen backbone -> one HDF5 feature file.

Flow: fingerprint (cheap: no model is built) -> cache hit? -> lock -> resume the journal -> stream batches
through a multi-worker DataLoader under ``inference_mode`` and autocast -> append each batch durably ->
write the HDF5 file from the journal and rename it into place.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import timm
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from fmprobe._io import __version__
from fmprobe.backbones import (
    ImageTransform,
    LoadedBackbone,
    create_backbone,
    get_spec,
    parse_name,
    resolve_weights,
    weights_label,
)  # fmt: skip
from fmprobe.datasets import Dataset, load_dataset
from fmprobe.datasets.base import FileSource, ImageSource
from fmprobe.errors import CacheError, DatasetError, FmprobeError, ImageError
from fmprobe.runtime import autocast, choose_device, dtype_candidates, timed_choice
from fmprobe.store import (
    Batch,
    FeatureFile,
    Fingerprint,
    Journal,
    Layout,
    exclusive,
    journal_path,
    merge,
    parse_shard,
    plan_batches,
)  # fmt: skip
from fmprobe.store.pixels import PixelCache

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

    def __init__(self, sources: list[ImageSource], transform: ImageTransform, cache: PixelCache | None = None) -> None:
        self.sources, self.transform, self.cache = sources, transform, cache
        self.offsets = np.cumsum([0] + [len(s) for s in sources])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, index: int):
        split = int(np.searchsorted(self.offsets, index, side="right") - 1)
        row = index - int(self.offsets[split])
        source = self.sources[split]
        if self.cache is not None and self.cache.pixels is not None:
            if index in self.cache.errors:
                return split, row, None, (0, 0), self.cache.errors[index]
            h, w = (int(v) for v in self.cache.sizes[index])  # type: ignore[index]
            return split, row, torch.from_numpy(np.array(self.cache.pixels[index])), (h, w), None
        try:
            pixels, valid = self.transform.to_uint8(source.load(row))
            return split, row, pixels, valid, None
        except ImageError as err:
            return split, row, None, (0, 0), str(err)
        except Exception as err:  # a decoder bug on one file must not lose the run: report it by name
            return split, row, None, (0, 0), f"{source.describe(row)}: unexpected error while loading ({type(err).__name__}: {err})"


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


def check_output_folder(folder: Path) -> None:
    """Fail before any work if the cache folder cannot be written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CacheError(f"cannot create output folder {folder} ({err.strerror}). Choose another with --out.") from None
    try:  # a real write: permission bits say nothing to root, and a read-only mount only shows on writing
        probe = tempfile.NamedTemporaryFile(dir=folder, prefix=".fmprobe-write-test-")
        probe.close()
    except OSError as err:
        raise CacheError(
            f"output folder {folder} is not writable ({err.strerror}). Fix its permissions or choose another with --out."
        ) from None


def _check_files_exist(dataset: Dataset) -> None:
    missing = [p for s in dataset.splits.values() if isinstance(s.source, FileSource) for p in s.source.paths if not p.exists()]
    if missing:
        raise DatasetError(
            f"{len(missing)} image file(s) of {dataset.name} are missing, e.g. {', '.join(map(str, missing[:3]))}. "
            "Restore them, fix the dataset listing, or run with --on-error skip to leave them out (recorded)."
        )


def _file_attrs(dataset: Dataset, fingerprint: Fingerprint, weights_label: str, batch_size: int) -> dict[str, object]:
    """The feature file's root attributes (besides what the writer adds)."""
    return {
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
        "fmprobe_version": __version__,
        "torch_version": torch.__version__,
        "timm_version": timm.__version__,
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _distributed_shard() -> tuple[int, int] | None:
    """(rank, world size) under torchrun (torch.distributed initialised on demand: gloo on CPU, nccl on GPU)."""
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size()


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
    shard: str | tuple[int, int] | None = None,
    distributed: bool | None = None,
    pixel_cache: bool = False,
    progress: bool = True,
    log: Log = _stderr,
) -> ExtractResult:
    """Extract (or find in the cache) the embeddings of every image of ``dataset`` under ``backbone``.

    ``shard="I/N"`` extracts only shard I of N into its part journal (the last shard to finish merges; or run
    :func:`fmprobe.merge_shards`). Under ``torchrun`` (``distributed=None`` detects it) every rank is a shard and
    rank 0 merges after a barrier. ``pixel_cache`` keeps the decoded, resized images (uint8) in ``<out>/.pixels``
    so later backbones with the same input geometry skip decoding.
    """
    started = time.perf_counter()
    if on_error not in ON_ERROR:
        raise FmprobeError(f"--on-error {on_error!r}: use fail or skip.")
    if feature_dtype not in FEATURE_DTYPES:
        raise FmprobeError(f"--feature-dtype {feature_dtype!r}: use float16 or float32.")
    if batch_size < 1:
        raise FmprobeError(f"--batch-size {batch_size}: must be at least 1.")
    ranks = _distributed_shard() if distributed is not False else None
    if distributed and ranks is None:
        raise FmprobeError("--distributed needs torchrun (WORLD_SIZE > 1); for job arrays use --shard I/N.")
    if ranks and shard:
        raise FmprobeError("--shard and torchrun both split the work; use one of them.")
    part = ranks or (parse_shard(shard) if isinstance(shard, str) else shard) or (0, 1)
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
    torch_device = choose_device(device, local_rank=int(os.environ["LOCAL_RANK"]) if ranks and "LOCAL_RANK" in os.environ else None)
    size = int(resolution or spec.native_resolution)

    def fingerprint_for(compute: str) -> Fingerprint:
        return Fingerprint(
            dataset=data.name,
            dataset_digest=data.content_digest,
            backbone=backbone,
            weights_digest=resolved[1],
            preprocess=spec.preprocess.at(size).to_dict(),
            resolution=size,
            readouts=chosen,
            compute_dtype=compute,
            feature_dtype=feature_dtype,
            image_conversion=str(data.extra.get("image_conversion", "pil-rgb8")),  # e.g. how DICOM was windowed
        )

    candidates = dtype_candidates(torch_device, dtype)
    loaded: LoadedBackbone | None = None
    cached = [d for d in candidates if not force and cache_path(out, data.name, backbone, fingerprint_for(d).key).exists()]
    if cached or len(candidates) == 1:
        compute_dtype = (cached or list(candidates))[0]
    else:
        compute_dtype, loaded = _probe_dtype(out, backbone, size, candidates, resolved, chosen, torch_device, part, log)
    fingerprint = fingerprint_for(compute_dtype)
    path = cache_path(out, data.name, backbone, fingerprint.key)
    path.parent.mkdir(parents=True, exist_ok=True)
    n_total = data.num_images

    def result(hit: bool, n_skipped: int) -> ExtractResult:
        return ExtractResult(path, hit, fingerprint.key, compute_dtype, str(torch_device), n_total, n_skipped, time.perf_counter() - started)

    def hit() -> ExtractResult | None:
        if force or not path.exists():
            return None
        feature_file = FeatureFile(path, expected_key=fingerprint.key)  # raises if damaged: never served
        log(f"cache hit: {path} ({n_total} images, {compute_dtype}); use --force to recompute")
        return result(True, sum(len(feature_file.skipped(s)) for s in feature_file.splits))

    found = hit()
    if found:
        return found
    if force and part == (0, 1):
        path.unlink(missing_ok=True)
    journal_file = journal_path(path, part)
    with exclusive(journal_file.with_name(journal_file.name + ".lock")):
        if part == (0, 1) and (found := hit()):
            return found  # another process finished it while we waited
        if force:
            journal_file.unlink(missing_ok=True)
        if on_error == "fail":
            _check_files_exist(data)
        loaded = loaded or create_backbone(backbone, resolution=size, resolved=resolved)
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
            "shard": list(part),
            "attrs": _file_attrs(data, fingerprint, weights_label(weights, resolved), batch_size),
        }
        layout = Layout({n: s.ids for n, s in data.splits.items()}, {n: s.labels for n, s in data.splits.items()})
        journal, committed = Journal.open(journal_file, header, layout)
        if int(journal.header["batch_size"]) != batch_size:  # type: ignore[call-overload]
            batch_size = int(journal.header["batch_size"])  # type: ignore[call-overload]
            log(f"resuming with batch size {batch_size}, as the run was started, so the result is identical")
        done = {(b.split, b.start) for b in committed}
        planned = plan_batches({n: len(s) for n, s in data.splits.items()}, batch_size, part)
        todo = [p for p in planned if (p[0], p[1]) not in done]
        mine = sum(p[2] for p in planned)
        n_done = mine - sum(p[2] for p in todo)
        n_skipped = sum(len(b.skipped) for b in committed)
        who = f" (shard {part[0]}/{part[1]}: {mine} of {n_total} images)" if part[1] > 1 else ""
        if n_done:
            log(f"resuming {journal_file.name}: {n_done}/{mine} images already extracted")
        log(f"extracting {data.name} with {backbone} at {size}px on {torch_device} ({compute_dtype}, batch {batch_size}){who}")
        bar = tqdm(total=mine, initial=n_done, unit="img", desc=f"{backbone}", disable=not progress, file=sys.stderr, dynamic_ncols=True, mininterval=0.5)
        t0 = time.perf_counter()
        try:
            pixels = None
            if pixel_cache and part == (0, 1):
                geometry = {k: v for k, v in spec.preprocess.at(size).to_dict().items() if k not in ("mean", "std")}
                pixels = PixelCache(out / ".pixels" / slug(data.name), data.content_digest, geometry, n_total, size)
            n_skipped += _run(loaded, model, data, todo, journal, chosen, torch_device, compute_dtype, on_error, num_workers, bar, pixels, n_done == 0, log)
        except KeyboardInterrupt:
            log(f"interrupted: the batches extracted so far are kept in {journal_file.name}; run the same command again to resume")
            raise
        finally:
            bar.close()
            journal.close()
        elapsed = time.perf_counter() - t0
        rate = (mine - n_done) / max(elapsed, 1e-9) if mine > n_done else 0.0
        log(f"extracted {mine - n_done} images in {elapsed:.1f}s ({rate:.1f} img/s, {compute_dtype}; {n_skipped} skipped)")
    journal_file.with_name(journal_file.name + ".lock").unlink(missing_ok=True)
    extra = {"images_per_s": rate * part[1]}  # measured; `fmprobe study --dry-run` uses it for cost estimates
    if ranks:
        import torch.distributed as dist

        dist.barrier()
        if ranks[0] == 0:
            merge(path, part[1], log, extra)
        dist.barrier()
    elif part[1] == 1:
        merge(path, 1, log, extra)
    else:
        try:
            merge(path, part[1], log, extra)  # the last shard to finish assembles the file
        except CacheError as err:
            log(f"shard {part[0]}/{part[1]} done; {str(err).split(': ', 1)[-1]}")
            return result(False, n_skipped)
    log(f"wrote {path}")
    return result(False, n_skipped)


def _probe_dtype(
    out: Path,
    backbone: str,
    size: int,
    candidates: tuple[str, ...],
    resolved: tuple[Path | None, str],
    readouts: tuple[str, ...],
    device: torch.device,
    part: tuple[int, int],
    log: Log,
) -> tuple[str, LoadedBackbone | None]:
    """bf16 or fp32 on a CPU with native bf16: time both on this model, once per machine, and remember the answer
    in ``<out>/.fmprobe-dtype.json`` (the dtype is part of the cache key, so it must not flip between runs)."""
    memo_path = out / ".fmprobe-dtype.json"
    machine = f"{platform.processor() or platform.machine()}|{os.cpu_count()}|torch{torch.__version__}"
    key = f"{backbone}@{size}|{machine}"
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    if key in memo:
        return str(memo[key]["dtype"]), None
    if part[1] > 1:  # shards must agree without talking to each other: no per-process timing
        log(f"compute dtype {candidates[0]} (by CPU capability; sharded runs skip the timed probe)")
        return candidates[0], None
    loaded = create_backbone(backbone, resolution=size, resolved=resolved)
    model = loaded.model.to(device)
    sample = torch.randn(2, 3, size, size, device=device)
    if model.channels_last:
        model, sample = model.to(memory_format=torch.channels_last), sample.contiguous(memory_format=torch.channels_last)

    @torch.inference_mode()
    def forward(compute: str) -> None:
        with autocast(device, compute):  # type: ignore[arg-type]
            model(sample, readouts)

    best, seconds = timed_choice(candidates, forward, repeats=1)  # type: ignore[arg-type]
    log(f"compute dtype {best} (timed on this CPU: " + ", ".join(f"{d} {t:.2f}s" for d, t in seconds.items()) + " per 2 images)")
    memo[key] = {"dtype": best, "seconds": seconds}
    with contextlib.suppress(OSError):
        tmp = memo_path.with_name(memo_path.name + f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(memo, indent=1, sort_keys=True))
        os.replace(tmp, memo_path)
    return best, loaded


@torch.inference_mode()
def _run(
    loaded: LoadedBackbone,
    model: torch.nn.Module,
    data: Dataset,
    todo: list[tuple[str, int, int]],
    journal: Journal,
    readouts: tuple[str, ...],
    device: torch.device,
    compute_dtype: str,
    on_error: str,
    num_workers: int | None,
    bar: tqdm,
    pixels: PixelCache | None = None,
    whole_run: bool = False,
    log: Log = _stderr,
) -> int:
    if not todo:
        return 0
    transform = loaded.transform()
    workers = default_workers() if num_workers is None else num_workers
    names = list(data.splits)
    reading = writing = False
    if pixels is not None:
        if pixels.complete:
            pixels.open_for_reading()
            reading = True
            workers = 0  # reading a memory map is a copy: a worker process would only compete with the model
            log(f"pixel cache: reading decoded images from {pixels.pixels_path}")
        elif whole_run:
            pixels.open_for_writing()
            writing = True
    rows = _Rows([data.splits[n].source for n in names], transform, pixels if reading else None)
    batches = [[int(rows.offsets[names.index(split)]) + start + i for i in range(count)] for split, start, count in todo]
    loader = DataLoader(
        rows,
        batch_sampler=batches,
        num_workers=workers,
        collate_fn=_collate,
        worker_init_fn=_worker_init if workers else None,
        pin_memory=device.type == "cuda",
        prefetch_factor=4 if workers else None,
    )
    n_skipped, n_kept = 0, 0
    out_dtype = np.dtype(journal.header["feature_dtype"])  # type: ignore[arg-type]
    dims: dict[str, int] = journal.header["dims"]  # type: ignore[assignment]
    pixel_errors: dict[int, str] = {}
    for split_index, batch_rows, pixel_batch, valid, errors in loader:
        name = names[split_index]
        if errors and on_error == "fail":
            first = errors[min(errors)]
            raise ImageError(
                f"{first}\n(The {n_kept} images extracted before it are kept: re-run with --on-error skip to "
                "resume from there and record this file as skipped. Repairing the file changes the dataset's "
                "content, and so its cache key: the extraction then starts afresh.)"
            )
        if pixel_batch is not None:
            images = transform.normalise_batch(pixel_batch.to(device, non_blocking=True), valid.to(device))
            if model.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with autocast(device, compute_dtype):  # type: ignore[arg-type]
                out = model(images, readouts)
            features = {r: out[r].float().cpu().numpy().astype(out_dtype) for r in readouts}
        else:
            features = {r: np.zeros((0, int(dims[r])), dtype=out_dtype) for r in readouts}
        start = batch_rows[0]
        if writing and pixels is not None:
            first = int(rows.offsets[split_index])
            ok = [r for r in batch_rows if r not in errors]
            if ok:
                pixels.write(np.asarray(ok) + first, pixel_batch.numpy(), valid.numpy())
            pixel_errors.update({first + r: e for r, e in errors.items()})
        skipped = {row - start: reason for row, reason in errors.items()}
        for reason in errors.values():
            bar.write(f"skipped: {reason.splitlines()[0]}")
        journal.append(Batch(name, start, len(batch_rows), skipped, features))
        n_skipped += len(skipped)
        n_kept += len(batch_rows)
        bar.update(len(batch_rows))
    if writing and pixels is not None:
        pixels.finish(pixel_errors)
        log(f"pixel cache: wrote {pixels.pixels_path} for later backbones with the same input geometry")
    return n_skipped

"""The only code that moves images through a network: dataset x frozen backbone -> one HDF5 feature file.

Plan, then execute. :func:`plan_extraction` decides everything without building a model (dataset, backbone
spec, readouts, weights digest, device, compute dtype, fingerprint, cache path, shard, batches) and returns an
:class:`ExtractionPlan` a user can print. :func:`execute` runs one: cache hit? -> lock -> resume the journal ->
stream batches through a multi-worker DataLoader under ``inference_mode`` and autocast -> append each batch
durably -> write the HDF5 file from the journal and rename it into place. :func:`extract_features` is the two.

Test-only hook: ``FMPROBE_TEST_KILL_AFTER_BATCHES=N`` makes an extraction send itself SIGKILL right after its
N-th committed batch (counted in this process), so the kill tests stop at an exact point instead of racing a
poll of the journal's size. Never set it outside tests.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import signal
import sys
import time
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import timm
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from fmprobe._io import (
    __version__,
    accepts_renamed,
    atomic_write_text,
    command_line,
    cpu_model,
    default_workers,
    exclusive,
    prove_writable,
    remove_dead_temporaries,
    slug,
)
from fmprobe.backbones import (
    BackboneSpec,
    ImageTransform,
    LoadedBackbone,
    create_backbone,
    get_spec,
    module_backbone,
    parse_backbone,
    resolve_weights,
    weights_label,
)  # fmt: skip
from fmprobe.datasets import Dataset, load_dataset
from fmprobe.datasets.base import DraftRequest, FileSource, ImageSource, load_image, reduces_jpeg
from fmprobe.errors import CacheError, DatasetError, FmprobeError, ImageError, WeightsError
from fmprobe.progress import progress as progress_bar
from fmprobe.runtime import (
    EXTRACT_RENAMED,
    ComputeDtype,
    Decode,
    Device,
    ExtractOptions,
    FeatureDtype,
    OnError,
    autocast,
    choose_device,
    dtype_candidates,
    timed_choice,
)  # fmt: skip
from fmprobe.store import (
    Batch,
    FeatureFile,
    Fingerprint,
    Journal,
    Layout,
    journal_path,
    merge,
    parse_shard,
    plan_batches,
)
from fmprobe.store.features import SplitLayout, metadata_update, refresh_metadata
from fmprobe.store.pixels import PixelCache
from fmprobe.store.shards import PlannedBatch

log = logging.getLogger(__name__)

ON_ERROR = tuple(m.value for m in OnError)
JPEG_DRAFT = "jpeg-draft"  # the preprocess record's decode mode for reduced-size JPEG decoding
FEATURE_DTYPES = tuple(m.value for m in FeatureDtype)
TEST_KILL_AFTER_BATCHES = "FMPROBE_TEST_KILL_AFTER_BATCHES"  # test-only: see the module docstring
DEFAULTS = ExtractOptions()
_OPTION_NAMES = frozenset(f.name for f in fields(ExtractOptions))


@dataclass(frozen=True)
class ExtractResult:
    """What one extraction produced: the feature file and how it came about (a cache hit, or how fast it ran).

    The file's path is what the next step needs (:class:`fmprobe.FeatureFile`, :func:`fmprobe.probe_features`);
    the rest says whether work was done and how fast, for logs and cost estimates.

    Attributes
    ----------
    path : Path
        The feature file, ``<out>/<dataset>/<backbone>__<key>.h5``.
    cache_hit : bool
        True where the file was already there and nothing was extracted.
    key : str
        The cache key: a digest of the dataset's content, backbone, weights, preprocessing, readouts and dtypes.
    compute_dtype : str
        The autocast dtype the features were computed in (``fp32``, ``bf16`` or ``fp16``).
    device : str
        The torch device they were computed on, e.g. ``cpu`` or ``cuda:0``.
    n_images : int
        Images with features (for a shard: those of its part).
    n_skipped : int
        Unreadable images recorded as skipped (``on_error="skip"``).
    seconds : float
        Wall time of the call, planning included.

    Examples
    --------
    >>> from fmprobe import extract_features
    >>> result = extract_features("demo", "efficientnet_lite0_imagenet:random", device="cpu")  # doctest: +SKIP
    >>> result.path, result.cache_hit, round(result.images_per_s)  # doctest: +SKIP
    (PosixPath('features/demo-v2-150x4-seed0/efficientnet_lite0_imagenet-random__35bb4d8ca1852f5d.h5'), False, 41)
    """

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


def cache_path(out: Path, dataset_name: str, backbone: str, key: str) -> Path:
    """``<out>/<dataset>/<backbone>__<key>.h5``: readable, and unique per fingerprint."""
    return out / slug(dataset_name) / f"{slug(backbone)}__{key}.h5"


@dataclass(frozen=True)
class ExtractionPlan:
    """Everything an extraction will do, decided before any model is built; ``print(plan)`` shows it.

    Planning first means a wrong readout, a missing weights file or an unwritable folder fails in seconds, and a
    user (or ``fmprobe extract --dry-run``) can see the cache path and key before hours of work. Made by
    :func:`plan_extraction`, run by :func:`execute`; its properties derive the rest (``fingerprint``, ``key``,
    ``path``, ``journal_path``, ``n_images``, ``n_mine``).

    Attributes
    ----------
    dataset : Dataset
        The loaded dataset (its listing; no image is decoded).
    backbone : str
        The canonical backbone name (aliases resolved; ``NAME:random:0`` written ``NAME:random``).
    spec : BackboneSpec
        The registry's record of the backbone (readouts, preprocessing, native size).
    resolved : tuple of (Path or None, str)
        The weights file (None: random initialisation) and its digest, which enters the key.
    resolution : int
        Input size in pixels.
    readouts : tuple of str
        The embeddings stored.
    device : torch.device
        Where the network runs.
    dtype_candidates : tuple of str
        The compute dtypes ``auto`` may pick here (two where only a timed run can tell).
    compute_dtype : str or None
        The chosen compute dtype; None only where ``auto`` must time bf16 against fp32 on this CPU (the first run
        of a backbone on a machine with native bf16): :func:`execute` times it, and the key and path follow.
    options : ExtractOptions
        The options the plan was made with.
    part : tuple of int
        (shard index, shard count); a single process is ``(0, 1)``.
    distributed : bool
        Under torchrun: rank 0 merges after a barrier.
    batches : tuple
        This part's batches, as (split, first row, rows).
    dtype_note : str or None
        Why this dtype, where worth saying when it runs.
    module : LoadedBackbone or None
        A user's ``torch.nn.Module`` (``model=``), already built; None for a registry backbone.

    Examples
    --------
    >>> from fmprobe import plan_extraction
    >>> plan = plan_extraction("demo", "efficientnet_lite0_imagenet:random", device="cpu")  # doctest: +SKIP
    >>> print(plan)  # doctest: +SKIP
    extraction plan
      dataset     demo-v2-150x4-seed0: multiclass, 4 classes, train 420, val 90, test 90 (spec demo)
      backbone    efficientnet_lite0_imagenet:random (weights: random, random-init:seed0:...)
      ...
    >>> plan.path.exists()  # doctest: +SKIP
    False
    """

    dataset: Dataset
    backbone: str
    spec: BackboneSpec
    resolved: tuple[Path | None, str]  # the weights file (None: random init) and its digest
    resolution: int
    readouts: tuple[str, ...]
    device: torch.device
    dtype_candidates: tuple[str, ...]
    compute_dtype: str | None
    options: ExtractOptions
    part: tuple[int, int]  # (shard index, shard count); a single process is (0, 1)
    distributed: bool  # under torchrun: rank 0 merges after a barrier
    batches: tuple[PlannedBatch, ...]  # this part's batches (split, first row, rows)
    dtype_note: str | None = None  # why this dtype, where worth saying when it runs
    module: LoadedBackbone | None = None  # a user's nn.Module (extract_features(model=...)), already built

    def load_backbone(self) -> LoadedBackbone:
        """The network this plan runs: the user's module, else the registry's backbone with the planned weights."""
        return self.module or create_backbone(self.backbone, resolution=self.resolution, resolved=self.resolved)

    @property
    def out(self) -> Path:
        return Path(self.options.out)

    @property
    def preprocess(self) -> dict[str, object]:
        """The backbone's preprocessing at this size, plus ``decode: jpeg-draft`` where JPEG files are decoded at
        reduced size (only then: the keys of every other extraction are those of files written before it existed)."""
        record = self.spec.preprocess.at(self.resolution).to_dict()
        return {**record, "decode": JPEG_DRAFT} if self.reduces_jpeg else record

    @property
    def reduces_jpeg(self) -> bool:
        """Whether JPEG files are decoded at the reduced size the resize allows (``--decode auto``)."""
        return self.options.decode == Decode.auto.value and any(reduces_jpeg(s.source) for s in self.dataset.splits.values())

    @property
    def is_imagenet_baseline(self) -> bool:
        """The registry's ImageNet-baseline entry with its published weights (not its :random control, not a file
        of the user's): the rows say so, and the report compares against it by default."""
        return bool(self.spec.imagenet_baseline and self.options.weights is None and self.resolved[0] is not None)

    def fingerprint_for(self, compute_dtype: str) -> Fingerprint:
        return Fingerprint(
            dataset=self.dataset.name,
            dataset_digest=self.dataset.content_digest,
            backbone=self.backbone,
            weights_digest=self.resolved[1],
            preprocess=self.preprocess,
            resolution=self.resolution,
            readouts=self.readouts,
            compute_dtype=compute_dtype,
            feature_dtype=self.options.feature_dtype,
            image_conversion=self.dataset.image_conversion,
        )

    def path_for(self, compute_dtype: str) -> Path:
        return cache_path(self.out, self.dataset.name, self.backbone, self.fingerprint_for(compute_dtype).key)

    @property
    def fingerprint(self) -> Fingerprint:
        if self.compute_dtype is None:
            raise FmprobeError("the compute dtype of this plan is chosen by a timed run: execute() it first.")
        return self.fingerprint_for(self.compute_dtype)

    @property
    def key(self) -> str:
        return self.fingerprint.key

    @property
    def path(self) -> Path:
        return cache_path(self.out, self.dataset.name, self.backbone, self.key)

    @property
    def journal_path(self) -> Path:
        return journal_path(self.path, self.part)

    @property
    def lock_path(self) -> Path:
        return self.journal_path.with_name(self.journal_path.name + ".lock")

    @property
    def n_images(self) -> int:
        return self.dataset.num_images

    @property
    def n_mine(self) -> int:
        """Images this part extracts (all of them unless sharded)."""
        return sum(count for _, _, count in self.batches)

    def with_compute_dtype(self, compute_dtype: str, note: str | None = None) -> ExtractionPlan:
        return replace(self, compute_dtype=compute_dtype, dtype_note=note)

    def describe(self) -> str:
        """A readable summary: what would be extracted, how, and where it is cached."""
        weights = weights_label(self.options.weights, self.resolved, self.backbone)
        pending = self.compute_dtype is None
        compute = " or ".join(self.dtype_candidates) + " (timed on this machine when run)" if pending else self.compute_dtype
        paths = [self.path_for(d) for d in self.dtype_candidates] if pending else [self.path]
        shard = f", shard {self.part[0]}/{self.part[1]}: {self.n_mine} of {self.n_images} images" if self.part[1] > 1 else ""
        lines = [
            ("dataset", f"{self.dataset.summary()} (spec {self.dataset.spec})"),
            ("backbone", f"{self.backbone} (weights: {weights}, {self.resolved[1]})"),
            ("resolution", f"{self.resolution}px"),
            ("readouts", ", ".join(self.readouts)),
            ("dtype", f"compute {compute} on {self.device}, stored as {self.options.feature_dtype}"),
            ("cache", " or ".join(map(str, paths)) + (" (exists: a cache hit)" if not pending and self.path.exists() else "")),
            ("key", " or ".join(self.fingerprint_for(d).key for d in self.dtype_candidates) if pending else self.key),
            ("images", f"{self.n_images}{shard}"),
            ("batches", f"{len(self.batches)} of up to {self.options.batch_size} images"),
        ]
        return "extraction plan\n" + "\n".join(f"  {name:<11} {value}" for name, value in lines)

    __str__ = describe


# ---- planning: no model is built, nothing but the output-folder check is written ----


@accepts_renamed(EXTRACT_RENAMED)
def plan_extraction(
    dataset: str | Dataset, backbone: str | torch.nn.Module | None = None, options: ExtractOptions | None = None,
    *, model: torch.nn.Module | None = None, transform: object = None, name: str | None = None, **overrides: object,
) -> ExtractionPlan:
    """Decide what extracting ``backbone`` features of ``dataset`` will do, without building a model.

    Every check that can fail does so here, in seconds: the dataset listing is read and the weights file hashed
    (both enter the cache key), the readouts and options are checked and the output folder proven writable. The
    plan says where the file will be cached and whether it already is; :func:`execute` runs it.

    Parameters
    ----------
    dataset : str or Dataset
        A dataset spec (:func:`fmprobe.load_dataset`, e.g. ``"demo"`` or ``"medmnist:pneumoniamnist@64"``) or a
        loaded dataset.
    backbone : str or torch.nn.Module or None, optional
        A registered backbone name (``fmprobe models``), ``NAME:random`` for its random-init control, or a module.
    options : ExtractOptions or None, optional
        The options as one record (default: :class:`~fmprobe.ExtractOptions`); ``overrides`` replace its fields.
    model : torch.nn.Module or None, optional
        Any module instead of a backbone name, returning ``[B, D]`` or a dict of named embeddings.
    transform : object, optional
        ``model``'s preprocessing: a :class:`~fmprobe.backbones.Preprocess`, a dict of its fields, or timm's
        ``resolve_data_config`` dict.
    name : str or None, optional
        The name ``model``'s features are cached and reported under.
    **overrides
        Fields of :class:`~fmprobe.ExtractOptions` (the keywords of :func:`extract_features`: ``workers``,
        ``max_images``, ``out``, ...).

    Returns
    -------
    ExtractionPlan
        What will run; ``print(plan)`` shows dataset, backbone, dtype, cache path and key.

    Raises
    ------
    fmprobe.errors.FmprobeError
        An unknown backbone or readout, a bad option, ``model=`` together with a name or ``weights=``, ``shard``
        under torchrun, or ``distributed=True`` outside it.
    fmprobe.errors.CacheError
        The output folder cannot be written.

    Examples
    --------
    >>> from fmprobe import plan_extraction
    >>> plan = plan_extraction("demo", "efficientnet_lite0_imagenet:random", device="cpu", max_images=8)  # doctest: +SKIP
    >>> plan.n_images, plan.resolution, plan.readouts  # doctest: +SKIP
    (24, 224, ('pooled',))
    """
    module = _module_backbone(backbone, model, transform, name, overrides)
    parsed = parse_backbone(module.name if module else str(backbone))
    backbone = parsed.canonical  # one name per backbone: an alias, and NAME:random:0 (NAME:random), key included
    opts = replace(options, **overrides) if options is not None else ExtractOptions(**overrides)  # type: ignore[arg-type]
    ranks = _torchrun_part() if opts.distributed is not False else None
    if opts.distributed and ranks is None:
        raise FmprobeError("--distributed needs torchrun (WORLD_SIZE > 1); for job arrays use --shard I/N.")
    if ranks and opts.shard:
        raise FmprobeError("--shard and torchrun both split the work; use one of them.")
    part = ranks or (parse_shard(opts.shard) if isinstance(opts.shard, str) else opts.shard) or (0, 1)
    check_output_folder(Path(opts.out))
    data = dataset if isinstance(dataset, Dataset) else load_dataset(dataset, opts.max_images)
    spec = module.spec if module else get_spec(parsed.base)
    readouts = _checked_readouts(spec, backbone, opts.readouts)
    resolved = (None, module.weights_digest) if module else resolve_weights(backbone, opts.weights)
    device = choose_device(opts.device, local_rank=int(os.environ["LOCAL_RANK"]) if ranks and "LOCAL_RANK" in os.environ else None)
    size = int(opts.resolution or spec.native_resolution)
    batches = plan_batches({n: len(s) for n, s in data.splits.items()}, opts.batch_size, part)
    plan = ExtractionPlan(
        data, backbone, spec, resolved, size, readouts, device, dtype_candidates(device, opts.dtype), None, opts,
        part, ranks is not None, tuple(batches), module=module,
    )  # fmt: skip
    return _choose_compute_dtype(plan)


def _module_backbone(
    backbone: object, model: torch.nn.Module | None, transform: object, name: str | None, overrides: dict[str, object]
) -> LoadedBackbone | None:
    """The user's module as a built backbone (None for a registry name); a module with ``weights`` is refused."""
    if isinstance(backbone, torch.nn.Module):
        backbone, model = None, backbone
    if model is None:
        if backbone is None:
            raise FmprobeError("give a backbone name (`fmprobe models`) or model=<a torch.nn.Module>.")
        if transform is not None or name is not None:
            raise FmprobeError(f"transform= and name= go with model=<a torch.nn.Module>; {backbone!r} brings its own.")
        return None
    if backbone is not None:
        raise FmprobeError(f"give a backbone name ({backbone!r}) or model=, not both.")
    if overrides.get("weights") is not None:
        raise FmprobeError("model= brings its weights; drop weights=.")
    return module_backbone(model, name, transform, overrides.get("resolution"))  # type: ignore[arg-type]


def _torchrun_part() -> tuple[int, int] | None:
    """(rank, world size) under torchrun, read from the environment it sets; None in a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return (int(os.environ.get("RANK", "0")), world) if world > 1 else None


def _checked_readouts(spec: BackboneSpec, backbone: str, readouts: tuple[str, ...] | None) -> tuple[str, ...]:
    chosen = tuple(readouts) if readouts else (spec.default_readout,)
    unknown = [r for r in chosen if not spec.supports(r)]
    if unknown:
        raise FmprobeError(f"readout(s) {unknown} do not exist for {backbone!r}; available: {', '.join(spec.readouts + spec.readout_patterns)}.")
    return chosen


def _choose_compute_dtype(plan: ExtractionPlan) -> ExtractionPlan:
    """One candidate, or one already cached, decides; else the dtype this machine was timed to prefer (memo); a
    shard takes the capability's choice (shards must agree without talking); else it stays open for a timed run."""
    candidates = plan.dtype_candidates
    cached = [d for d in candidates if not plan.options.force and plan.path_for(d).exists()]
    if cached or len(candidates) == 1:
        return plan.with_compute_dtype((cached or list(candidates))[0])
    remembered = _read_dtype_memo(plan.out).get(_dtype_memo_key(plan))
    if remembered is not None:
        return plan.with_compute_dtype(str(remembered["dtype"]))
    if plan.part[1] > 1:
        return plan.with_compute_dtype(candidates[0], "by CPU capability; sharded runs skip the timed probe")
    return plan


def check_output_folder(folder: Path) -> None:
    """Fail before any work if the cache folder cannot be written (a real, flushed write)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CacheError(f"cannot create output folder {folder} ({err.strerror}). Choose another with --out.") from None
    try:
        prove_writable(folder)
    except OSError as err:
        raise CacheError(
            f"output folder {folder} is not writable ({err.strerror}). Fix its permissions, free space, or choose "
            "another with --out."
        ) from None


# ---- the compute-dtype probe and its per-machine memo ----


def _dtype_memo_path(out: Path) -> Path:
    return out / ".fmprobe-dtype.json"


def _dtype_memo_key(plan: ExtractionPlan) -> str:
    machine = f"{platform.processor() or platform.machine()}|{os.cpu_count()}|torch{torch.__version__}"
    return f"{plan.backbone}@{plan.resolution}|{machine}"


def _read_dtype_memo(out: Path) -> dict[str, dict[str, object]]:
    try:
        return json.loads(_dtype_memo_path(out).read_text())
    except (OSError, ValueError):
        return {}


def _time_compute_dtype(plan: ExtractionPlan) -> tuple[ExtractionPlan, LoadedBackbone]:
    """bf16 or fp32 on a CPU with native bf16: time both on this model, once per machine, and remember the answer
    in ``<out>/.fmprobe-dtype.json`` (the dtype is part of the cache key, so it must not flip between runs)."""
    loaded = plan.load_backbone()
    model = loaded.model.to(plan.device)
    sample = torch.randn(2, 3, plan.resolution, plan.resolution, device=plan.device)
    if model.channels_last:
        model, sample = model.to(memory_format=torch.channels_last), sample.contiguous(memory_format=torch.channels_last)

    @torch.inference_mode()
    def forward(compute: str) -> None:
        with autocast(plan.device, compute):  # type: ignore[arg-type]
            model(sample, plan.readouts)

    best, seconds = timed_choice(plan.dtype_candidates, forward, repeats=1)  # type: ignore[arg-type]
    log.info(f"compute dtype {best} (timed on this CPU: " + ", ".join(f"{d} {t:.2f}s" for d, t in seconds.items()) + " per 2 images)")
    _remember_dtype(plan.out, _dtype_memo_key(plan), {"dtype": best, "seconds": seconds})
    return plan.with_compute_dtype(best), loaded


def _remember_dtype(out: Path, key: str, entry: dict[str, object]) -> None:
    """Add one entry to the memo: read, add and replace under its lock, so concurrent runs of other backbones
    sharing the folder never drop each other's entries (a dropped entry would be timed again, maybe differently)."""
    path = _dtype_memo_path(out)
    with contextlib.suppress(OSError, CacheError), exclusive(path.with_name(path.name + ".lock"), what="the dtype memo", remove=True):
        memo = {**_read_dtype_memo(out), key: entry}
        atomic_write_text(path, json.dumps(memo, indent=1, sort_keys=True), fsync=False)


# ---- execution: lock, journal, loader, merge ----


def execute(plan: ExtractionPlan) -> ExtractResult:
    """Run ``plan``: serve the cache when it holds the result, else extract this part (resuming its journal)
    under a lock and assemble the feature file (the last shard to finish, or rank 0 under torchrun, merges)."""
    started = time.perf_counter()
    if plan.distributed:
        _join_process_group()
    loaded: LoadedBackbone | None = None
    if plan.compute_dtype is None:
        plan, loaded = _time_compute_dtype(plan)
    elif plan.dtype_note:
        log.info(f"compute dtype {plan.compute_dtype} ({plan.dtype_note})")
    plan.path.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(plan)
    if found := _cache_hit(plan, started):
        return found
    with exclusive(plan.lock_path, remove=True):  # held through the merge: a waiter wakes to a cache hit
        if plan.part == (0, 1) and (found := _cache_hit(plan, started, locked=True)):
            return found  # another process finished it while we waited
        if plan.options.force and plan.part == (0, 1):
            plan.path.unlink(missing_ok=True)
        n_skipped, measured = _extract_part(plan, loaded)
        _assemble(plan, measured)  # measured: `fmprobe study --dry-run` and the report's cost section use it
    return _result(plan, False, n_skipped, started)


def _result(plan: ExtractionPlan, hit: bool, n_skipped: int, started: float) -> ExtractResult:
    """``n_images`` counts the images with features (those of this part for a shard), ``n_skipped`` the others."""
    n_extracted = (plan.n_images if hit else plan.n_mine) - n_skipped
    return ExtractResult(
        plan.path, hit, plan.key, str(plan.compute_dtype), str(plan.device), n_extracted, n_skipped, time.perf_counter() - started
    )


def _remove_leftovers(plan: ExtractionPlan) -> None:
    """What killed runs left beside this cache: temporary files of dead processes, and (beside a finished
    feature file) the journals and lock files a kill between the rename and the clean-up left behind. A file
    whose lock a live process holds is left alone."""
    remove_dead_temporaries(plan.path.parent, plan.path.name)
    if plan.options.force or not plan.path.exists():
        return
    removed = []
    journals = sorted(plan.path.parent.glob(plan.path.name + "*.journal"))
    for path in [*journals, *sorted(plan.path.parent.glob(plan.path.name + "*.lock"))]:
        lock = path.with_name(path.name + ".lock") if path.suffix == ".journal" else path
        if not path.exists():
            continue  # a journal's lock, removed with it
        with contextlib.suppress(CacheError, FileNotFoundError):
            with exclusive(lock, wait=False, what="this cache", remove=True):
                if path != lock and path.exists():
                    path.unlink()
                removed.append(path.name)
    if removed:
        log.info(f"removed {', '.join(sorted(set(removed)))}: left by a killed run; {plan.path.name} is complete")


def _cache_hit(plan: ExtractionPlan, started: float, locked: bool = False) -> ExtractResult | None:
    """The cached result when the feature file exists (its metadata first brought up to date); ``locked``: the
    caller holds this part's lock."""
    if plan.options.force or not plan.path.exists():
        return None
    feature_file = FeatureFile(plan.path, expected_key=plan.key)  # raises if damaged: never served
    _refresh_metadata(plan, feature_file, locked)
    found = _result(plan, True, sum(len(feature_file.skipped(s)) for s in feature_file.splits), started)
    skipped = f", {found.n_skipped} skipped" if found.n_skipped else ""
    log.info(f"cache hit: {plan.path} ({found.n_images} images{skipped}, {plan.compute_dtype}); use --force to recompute")
    return found


def _refresh_metadata(plan: ExtractionPlan, feature_file: FeatureFile, locked: bool) -> None:
    """Store the dataset's current per-sample metadata in a cached file that holds other metadata. Metadata is not
    in the key (it changes no embedding), so an edited sex or age column is a refresh, not a re-extraction. Done
    under the extraction lock; a file that cannot be rewritten (a read-only cache) is served as it is, with a
    warning, since its features are still right."""
    layouts = {name: SplitLayout(s.ids, s.labels, dict(s.metadata)) for name, s in plan.dataset.splits.items()}
    try:
        if not metadata_update(feature_file, layouts)[1]:
            return
        with contextlib.nullcontext() if locked else exclusive(plan.lock_path, remove=True):
            change = refresh_metadata(FeatureFile(plan.path, expected_key=plan.key), layouts)  # re-read under the lock
    except (OSError, CacheError) as err:
        log.warning(
            f"{plan.path.name}: its per-sample metadata differs from the dataset's but cannot be refreshed ({err}); "
            "subgroups read from it use the stored values. Make the cache folder writable and run again."
        )
        return
    if change:
        log.info(f"metadata refreshed: {change}; features unchanged ({plan.path.name})")


def _join_process_group() -> None:
    """torch.distributed initialised on demand under torchrun: gloo on CPU, nccl on GPU."""
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")


def _assemble(plan: ExtractionPlan, extra: dict[str, object]) -> bool:
    """Merge the journal(s) into the feature file; False where a shard finished before the others."""
    if plan.distributed:
        import torch.distributed as dist

        dist.barrier()
        if plan.part[0] == 0:
            merge(plan.path, plan.part[1], extra)
        dist.barrier()
        return True
    if plan.part[1] == 1:
        merge(plan.path, 1, extra)
        return True
    try:
        merge(plan.path, plan.part[1], extra)  # the last shard to finish assembles the file
    except CacheError as err:
        log.info(f"shard {plan.part[0]}/{plan.part[1]} done; {str(err).split(': ', 1)[-1]}")
        return False
    return True


@dataclass(frozen=True)
class _Progress:
    """Where a part stands after reading its journal."""

    batch_size: int
    todo: list[PlannedBatch]
    n_mine: int
    n_done: int
    n_skipped: int


@dataclass(frozen=True)
class _Session:
    """What the executor holds while a part runs: the built model, its open journal and the progress bar."""

    loaded: LoadedBackbone
    model: torch.nn.Module
    journal: Journal
    bar: tqdm


def _extract_part(plan: ExtractionPlan, loaded: LoadedBackbone | None) -> tuple[int, dict[str, object]]:
    """Extract this part's missing batches into its journal; returns (images skipped, what was measured: the
    feature file's cost attributes). Holds the lock."""
    if plan.options.force:
        plan.journal_path.unlink(missing_ok=True)
    if plan.options.on_error == OnError.fail.value:
        _check_files_exist(plan.dataset)
    loaded = loaded or plan.load_backbone()
    model = loaded.model.to(plan.device)
    if model.channels_last:
        model = model.to(memory_format=torch.channels_last)
    journal, committed = Journal.open(plan.journal_path, _journal_header(plan, model), _layout(plan.dataset))
    progress = _resume_point(plan, journal, committed)
    bar = progress_bar(total=progress.n_mine, initial=progress.n_done, unit="img", desc=f"{plan.backbone}", disable=not plan.options.progress,
                       mininterval=0.5)  # fmt: skip
    t0 = time.perf_counter()
    try:
        pixels = _pixel_cache(plan)
        n_skipped = progress.n_skipped + _run(plan, _Session(loaded, model, journal, bar), progress.todo, pixels, progress.n_done == 0)
    except KeyboardInterrupt:
        log.info(f"interrupted: the batches extracted so far are kept in {plan.journal_path.name}; run the same command again to resume")
        raise
    finally:
        bar.close()
        journal.close()
    elapsed, n_new = time.perf_counter() - t0, progress.n_mine - progress.n_done
    rate = n_new / max(elapsed, 1e-9) if n_new > 0 else 0.0
    log.info(f"extracted {n_new} images in {elapsed:.1f}s ({rate:.1f} img/s, {plan.compute_dtype}; {n_skipped} skipped)")
    return n_skipped, _measured(plan, model, rate, elapsed)


def _measured(plan: ExtractionPlan, model: torch.nn.Module, rate: float, elapsed: float) -> dict[str, object]:
    """The cost attributes of the feature file (never part of its key): images/s over all parts, the seconds this
    part took (a resumed run: since it resumed), and the network's parameter count."""
    return {
        "images_per_s": rate * plan.part[1],
        "extraction_seconds": float(elapsed),
        "parameters": int(sum(p.numel() for p in model.parameters())),
    }


def _check_files_exist(dataset: Dataset) -> None:
    missing = [p for s in dataset.splits.values() if isinstance(s.source, FileSource) for p in s.source.paths if not p.exists()]
    if missing:
        raise DatasetError(
            f"{len(missing)} image file(s) of {dataset.name} are missing, e.g. {', '.join(map(str, missing[:3]))}. "
            "Restore them, fix the dataset listing, or run with --on-error skip to leave them out (recorded)."
        )


def _layout(data: Dataset) -> Layout:
    return Layout(
        {n: s.ids for n, s in data.splits.items()},
        {n: s.labels for n, s in data.splits.items()},
        {n: dict(s.metadata) for n, s in data.splits.items() if s.metadata},
    )


def _journal_header(plan: ExtractionPlan, model: torch.nn.Module) -> dict[str, object]:
    return {
        "fingerprint": plan.fingerprint.to_json(),
        "readouts": list(plan.readouts),
        "dims": model.embed_dims(plan.readouts, plan.resolution),  # type: ignore[operator]
        "feature_dtype": plan.options.feature_dtype,
        "batch_size": plan.options.batch_size,
        "shard": list(plan.part),
        "attrs": _file_attrs(plan),
    }


def _file_attrs(plan: ExtractionPlan) -> dict[str, object]:
    """The feature file's root attributes (besides what the writer adds)."""
    dataset, fingerprint = plan.dataset, plan.fingerprint
    return {
        "fingerprint": fingerprint.to_json(),
        "key": fingerprint.key,
        "schema_version": fingerprint.schema_version,
        "task": dataset.task,
        "class_names": json.dumps(list(dataset.class_names)),
        "primary_metric": dataset.primary_metric,
        "evaluation": json.dumps(dataset.evaluation, sort_keys=True),
        "dataset_spec": dataset.spec,
        "readouts": json.dumps(list(fingerprint.readouts)),
        "backbone": fingerprint.backbone,
        "weights_label": weights_label(plan.options.weights, plan.resolved, plan.backbone),
        "imagenet_baseline": plan.is_imagenet_baseline,
        "compute_dtype": fingerprint.compute_dtype,
        "extraction_device": str(plan.device),
        "batch_size": plan.options.batch_size,
        "fmprobe_version": __version__,
        "torch_version": torch.__version__,
        "timm_version": timm.__version__,
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        # provenance only, never part of the key: who made the file, on what
        "command_line": command_line(),
        "cpu_model": cpu_model(),
        "gpu": torch.cuda.get_device_name(plan.device) if plan.device.type == "cuda" else plan.device.type,
    }


def _resume_point(plan: ExtractionPlan, journal: Journal, committed: list[Batch]) -> _Progress:
    """The batches still to do; a resumed run keeps the batch size it was started with, so the result is identical."""
    batch_size, planned = plan.options.batch_size, list(plan.batches)
    if int(journal.header["batch_size"]) != batch_size:  # type: ignore[call-overload]
        batch_size = int(journal.header["batch_size"])  # type: ignore[call-overload]
        log.info(f"resuming with batch size {batch_size}, as the run was started, so the result is identical")
        planned = plan_batches({n: len(s) for n, s in plan.dataset.splits.items()}, batch_size, plan.part)
    done = {(b.split, b.start) for b in committed}
    todo = [p for p in planned if (p[0], p[1]) not in done]
    mine = sum(p[2] for p in planned)
    n_done = mine - sum(p[2] for p in todo)
    who = f" (shard {plan.part[0]}/{plan.part[1]}: {mine} of {plan.n_images} images)" if plan.part[1] > 1 else ""
    if n_done:
        log.info(f"resuming {plan.journal_path.name}: {n_done}/{mine} images already extracted")
    log.info(f"extracting {plan.dataset.name} with {plan.backbone} at {plan.resolution}px on {plan.device} ({plan.compute_dtype}, batch {batch_size}){who}")
    return _Progress(batch_size, todo, mine, n_done, sum(len(b.skipped) for b in committed))


def _pixel_cache(plan: ExtractionPlan) -> PixelCache | None:
    """The decoded-pixel cache of this dataset and input geometry (single-process runs only)."""
    if not plan.options.pixel_cache or plan.part != (0, 1):
        return None
    geometry = {k: v for k, v in plan.preprocess.items() if k not in ("mean", "std")}
    geometry["image_conversion"] = plan.dataset.image_conversion  # how pixels were decoded (EXIF applied, DICOM window)
    return PixelCache(plan.out / ".pixels" / slug(plan.dataset.name), plan.dataset.content_digest, geometry, plan.n_images, plan.resolution)


# ---- the loop ----


class _Rows(torch.utils.data.Dataset):
    """All splits' rows behind one global index (one DataLoader, one set of workers for the whole run).

    Items are (split index, row, uint8 pixels | None, valid size, error | None): errors travel as values so the
    main process decides (fail naming the file, or record and skip); pixels stay uint8 until the main process
    normalises the whole batch, which quarters the bytes workers send.
    """

    def __init__(
        self, sources: list[ImageSource], transform: ImageTransform, cache: PixelCache | None = None, draft: DraftRequest | None = None
    ) -> None:
        self.sources, self.transform, self.cache, self.draft = sources, transform, cache, draft
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
            pixels, valid = self.transform.to_uint8(load_image(source, row, self.draft))
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


def _open_pixel_cache(pixels: PixelCache | None, whole_run: bool) -> tuple[bool, bool]:
    """(reading, writing): a complete cache whose checksums hold is read; a run that covers every image from the
    start writes one (or rebuilds a damaged one) unless another process is writing it."""
    if pixels is None:
        return False, False
    if pixels.complete and pixels.open_for_reading():
        log.info(f"pixel cache: reading decoded images from {pixels.pixels_path}")
        return True, False
    if whole_run and pixels.open_for_writing():
        return False, True
    return False, False


def _loader(rows: _Rows, names: list[str], todo: list[PlannedBatch], workers: int, device: torch.device) -> DataLoader:
    batches = [[int(rows.offsets[names.index(split)]) + start + i for i in range(count)] for split, start, count in todo]
    return DataLoader(
        rows,
        batch_sampler=batches,
        num_workers=workers,
        collate_fn=_collate,
        worker_init_fn=_worker_init if workers else None,
        pin_memory=device.type == "cuda",
        prefetch_factor=4 if workers else None,
    )


def _test_kill_after() -> int | None:
    """Test-only: the batch count after which the extraction SIGKILLs itself (``FMPROBE_TEST_KILL_AFTER_BATCHES``)."""
    value = os.environ.get(TEST_KILL_AFTER_BATCHES, "").strip()
    return int(value) if value else None


@torch.inference_mode()
def _run(plan: ExtractionPlan, session: _Session, todo: list[PlannedBatch], pixels: PixelCache | None, whole_run: bool) -> int:
    """Stream ``todo`` through the model into the journal; returns the number of images skipped."""
    if not todo:
        return 0
    transform = session.loaded.transform()
    names = list(plan.dataset.splits)
    reading, writing = _open_pixel_cache(pixels, whole_run)
    draft = transform.draft_request if plan.reduces_jpeg else None
    rows = _Rows([plan.dataset.splits[n].source for n in names], transform, pixels if reading else None, draft)
    try:
        n_skipped, pixel_errors = _stream(plan, session, transform, rows, todo, pixels if writing else None)
    except BaseException:
        if writing and pixels is not None:
            pixels.abandon()
        raise
    if writing and pixels is not None:
        pixels.finish(pixel_errors)
        log.info(f"pixel cache: wrote {pixels.pixels_path} for later backbones with the same input geometry")
    return n_skipped


def _stream(
    plan: ExtractionPlan, session: _Session, transform: ImageTransform, rows: _Rows, todo: list[PlannedBatch], pixels: PixelCache | None
) -> tuple[int, dict[int, str]]:
    """The loop of :func:`_run`: (images skipped, the pixel cache's failures by global row)."""
    names = list(plan.dataset.splits)
    reading = rows.cache is not None  # a memory map: workers would only copy it
    workers = 0 if reading else (default_workers() if plan.options.workers is None else plan.options.workers)
    kill_after = _test_kill_after()
    n_skipped = n_kept = n_committed = 0
    pixel_errors: dict[int, str] = {}
    with _model_threads(plan.device, workers):
        for split_index, batch_rows, pixel_batch, valid, errors in _loader(rows, names, todo, workers, plan.device):
            n_kept, n_committed = _step(plan, session, transform, rows, (split_index, batch_rows, pixel_batch, valid, errors),
                                        pixels, pixel_errors, n_kept, n_committed)  # fmt: skip
            n_skipped += len(errors)
            if kill_after is not None and n_committed >= kill_after:
                os.kill(os.getpid(), signal.SIGKILL)  # test-only hook: an exact kill point
    return n_skipped, pixel_errors


def _step(
    plan: ExtractionPlan, session: _Session, transform: ImageTransform, rows: _Rows, batch: tuple, pixels: PixelCache | None,
    pixel_errors: dict[int, str], n_kept: int, n_committed: int,
) -> tuple[int, int]:
    """One loaded batch: refuse or record its errors, forward it, keep its pixels, commit it; the new counts."""
    names = list(plan.dataset.splits)
    split_index, batch_rows, pixel_batch, valid, errors = batch
    if errors and plan.options.on_error == OnError.fail.value:
        first = errors[min(errors)]
        raise ImageError(
            f"{first}\n(The {n_kept} images extracted before it are kept: re-run with --on-error skip to "
            "resume from there and record this file as skipped. Repairing the file changes the dataset's "
            "content, and so its cache key: the extraction then starts afresh.)"
        )
    features = _forward(plan, session, transform, pixel_batch, valid)
    _check_finite(plan, features, names[split_index], batch_rows, n_committed)
    if pixels is not None:
        _keep_pixels(pixels, int(rows.offsets[split_index]), batch_rows, pixel_batch, valid, errors, pixel_errors)
    start = batch_rows[0]
    for reason in errors.values():
        session.bar.write(f"skipped: {reason.splitlines()[0]}", file=sys.stderr)  # diagnostics never on stdout
    session.journal.append(Batch(names[split_index], start, len(batch_rows), {row - start: r for row, r in errors.items()}, features))
    session.bar.update(len(batch_rows))
    return n_kept + len(batch_rows), n_committed + 1


def decoding_has_own_cores(workers: int) -> bool:
    """Whether ``workers`` decoding processes get cores of their own on this CPU: only where the model keeps at least
    3/4 of the cores (see :func:`_model_threads`)."""
    return 0 < workers <= (os.cpu_count() or 1) // 4


@contextlib.contextmanager
def _model_threads(device: torch.device, workers: int):
    """On CPU with decoding workers, the model takes the cores the workers leave (``cores - workers``) for the run,
    so the two do not fight over cores (the model's threads spin-wait for each other, a descheduled one stalls the
    whole layer); restored after. Only where that leaves the model at least 3/4 of the cores: on a small machine
    (2 cores, 1 worker) a core taken from the model costs far more than the decoding it would shield."""
    before = torch.get_num_threads()
    cores = os.cpu_count() or 1
    split = device.type == "cpu" and decoding_has_own_cores(workers)
    torch.set_num_threads(min(before, cores - workers) if split else before)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _check_finite(plan: ExtractionPlan, features: dict[str, np.ndarray], split: str, batch_rows: list[int], n_committed: int) -> None:
    """NaN/inf features are refused where they are made (damaged weights, an overflowing dtype), not at probe time."""
    bad = [r for r, values in features.items() if not np.isfinite(values).all()]
    if not bad:
        return
    weights = plan.resolved[0] or "random initialisation"
    raise WeightsError(
        f"{plan.backbone} (weights {weights}) produced NaN/inf features (readout {bad[0]}, {split} rows "
        f"{batch_rows[0]}-{batch_rows[-1]}): the weights file is damaged or holds NaN, or {plan.compute_dtype} "
        f"overflows. Pass intact weights with --weights, or try --dtype fp32. The {n_committed} batch(es) this run "
        f"committed before are kept in {plan.journal_path.name}."
    )


def _forward(plan: ExtractionPlan, session: _Session, transform: ImageTransform, pixel_batch, valid) -> dict[str, np.ndarray]:
    """One batch's features per readout, in the storage dtype (an all-skipped batch gives empty arrays)."""
    out_dtype = np.dtype(session.journal.header["feature_dtype"])  # type: ignore[arg-type]
    if pixel_batch is None:
        dims: dict[str, int] = session.journal.header["dims"]  # type: ignore[assignment]
        return {r: np.zeros((0, int(dims[r])), dtype=out_dtype) for r in plan.readouts}
    images = transform.normalise_batch(pixel_batch.to(plan.device, non_blocking=True), valid.to(plan.device))
    if session.model.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    with autocast(plan.device, plan.compute_dtype):  # type: ignore[arg-type]
        out = session.model(images, plan.readouts)
    return {r: out[r].float().cpu().numpy().astype(out_dtype) for r in plan.readouts}


def _keep_pixels(
    pixels: PixelCache, first: int, batch_rows: list[int], pixel_batch, valid, errors: dict[int, str], pixel_errors: dict[int, str]
) -> None:
    """Write a batch's decoded pixels into the pixel cache and note its failures (global row index)."""
    ok = [r for r in batch_rows if r not in errors]
    if ok:
        pixels.write(np.asarray(ok) + first, pixel_batch.numpy(), valid.numpy())
    pixel_errors.update({first + r: e for r, e in errors.items()})


# ---- the public entry point: plan + execute ----


@accepts_renamed(EXTRACT_RENAMED)
def extract_features(
    dataset: str | Dataset,
    backbone: str | torch.nn.Module | None = None,
    *,
    model: torch.nn.Module | None = None,
    transform: object = None,
    name: str | None = None,
    weights: str | Path | None = DEFAULTS.weights,
    resolution: int | None = DEFAULTS.resolution,
    readouts: tuple[str, ...] | list[str] | None = DEFAULTS.readouts,
    batch_size: int = DEFAULTS.batch_size,
    device: str | Device = DEFAULTS.device,
    dtype: str | ComputeDtype = DEFAULTS.dtype,
    feature_dtype: str | FeatureDtype = DEFAULTS.feature_dtype,
    out: str | Path = DEFAULTS.out,
    on_error: str | OnError = DEFAULTS.on_error,
    force: bool = DEFAULTS.force,
    workers: int | None = DEFAULTS.workers,
    max_images: int | None = DEFAULTS.max_images,
    shard: str | tuple[int, int] | None = DEFAULTS.shard,
    distributed: bool | None = DEFAULTS.distributed,
    pixel_cache: bool = DEFAULTS.pixel_cache,
    progress: bool = DEFAULTS.progress,
    decode: str = DEFAULTS.decode,
) -> ExtractResult:
    """Extract (or find in the cache) the embeddings of every image of ``dataset`` under a frozen ``backbone``.

    The one expensive step of a study, so it is done once per (dataset, backbone, weights, preprocessing,
    readouts, dtypes) and cached under a key of all of them; an interrupted run resumes from its journal, and a
    second call is a cache hit. ``execute(plan_extraction(dataset, backbone, ...))``; the defaults are
    :class:`~fmprobe.ExtractOptions`'. Messages go to the ``fmprobe`` logger. The old keyword names
    ``num_workers`` and ``max_images_per_split`` still work, with a ``DeprecationWarning``.

    Parameters
    ----------
    dataset : str or Dataset
        A dataset spec (:func:`fmprobe.load_dataset`, e.g. ``"demo"``, ``"medmnist:pneumoniamnist@64"``, a
        ``.npz`` or ``manifest:labels.csv`` path) or a loaded dataset.
    backbone : str or torch.nn.Module or None, optional
        A registered backbone name (``fmprobe models``), ``NAME:random`` for its random-init control, or a module
        (as ``model``).
    model : torch.nn.Module or None, optional
        Any module instead of a backbone name, returning ``[B, D]`` or a dict of named embeddings; its cache key
        holds a digest of its class and state dict.
    transform : object, optional
        ``model``'s preprocessing: a :class:`~fmprobe.backbones.Preprocess`, a dict of its fields, or timm's
        ``resolve_data_config`` dict.
    name : str or None, optional
        The name ``model``'s features are cached and reported under.
    weights : str or Path or None, optional
        A local checkpoint instead of the published weights (offline machines).
    resolution : int or None, optional
        Input size in pixels (default: the backbone's native size).
    readouts : sequence of str or None, optional
        Which embeddings to store (default: the backbone's default readout).
    batch_size : int, optional
        Images per forward pass.
    device : str or Device, optional
        ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
    dtype : str or ComputeDtype, optional
        The compute dtype; ``auto`` picks (and on CPUs with native bf16, times) per machine.
    feature_dtype : str or FeatureDtype, optional
        The storage dtype, ``float16`` or ``float32``.
    out : str or Path, optional
        The cache folder (``--out``).
    on_error : str or OnError, optional
        ``fail`` at the first unreadable image, or ``skip`` it and record why.
    force : bool, optional
        Extract again even where the cache holds the file.
    workers : int or None, optional
        Image-decoding processes (``--workers``; default: cores - 1, at most 4).
    max_images : int or None, optional
        A seeded subset of at most this many images per split (``--max-images``): a quick look.
    shard : str or tuple of int or None, optional
        ``"I/N"``: extract only shard I of N into its part journal (the last shard to finish merges; or run
        :func:`fmprobe.merge_shards`).
    distributed : bool or None, optional
        Under ``torchrun`` every rank is a shard and rank 0 merges after a barrier; None detects it.
    pixel_cache : bool, optional
        Keep the decoded, resized images (uint8) in ``<out>/.pixels`` so later backbones with the same input
        geometry skip decoding.
    progress : bool, optional
        Show the progress bar; the inverse of the CLI's ``--quiet``.
    decode : str, optional
        ``auto`` decodes JPEG files at the reduced size the resize allows; ``full`` always at full size (the
        fingerprint records which).

    Returns
    -------
    ExtractResult
        The feature file's ``path`` (open it with :class:`fmprobe.FeatureFile`), whether it was a ``cache_hit``,
        its ``key``, the dtype and device used, the image counts and the time taken.

    Raises
    ------
    fmprobe.errors.FmprobeError
        A bad option, unknown backbone or readout (raised before any work, naming the option).
    fmprobe.errors.ImageError
        An unreadable image with ``on_error="fail"`` (the batches before it are kept for a resume).
    fmprobe.errors.WeightsError
        The weights produce NaN/inf features.
    fmprobe.errors.CacheError
        The output folder cannot be written.

    Examples
    --------
    >>> from fmprobe import FeatureFile, extract_features
    >>> result = extract_features("demo", "efficientnet_lite0_imagenet:random", workers=0, max_images=40)  # doctest: +SKIP
    >>> result.cache_hit, result.n_images  # doctest: +SKIP
    (False, 120)
    >>> extract_features("demo", "efficientnet_lite0_imagenet:random", workers=0, max_images=40).cache_hit  # doctest: +SKIP
    True
    >>> FeatureFile(result.path).load("train").features.shape  # doctest: +SKIP
    (40, 1280)
    """
    started = time.perf_counter()
    options = {key: value for key, value in locals().items() if key in _OPTION_NAMES}
    result = execute(plan_extraction(dataset, backbone, model=model, transform=transform, name=name, **options))
    return replace(result, seconds=time.perf_counter() - started)


__all__ = [
    "DEFAULTS", "ExtractOptions", "ExtractResult", "ExtractionPlan", "FeatureDtype", "OnError", "cache_path",
    "check_output_folder", "execute", "extract_features", "plan_extraction", "slug",
]  # fmt: skip

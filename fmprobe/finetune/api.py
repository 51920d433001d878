"""`fmprobe finetune`: train a head (or the backbone too) on a dataset and write the same result rows as the probes.

Layout under ``out`` (the same as a study's): ``out/results/`` gets the rows and ``predictions/<cell_id>.npz``
(next to the probes' rows, so `fmprobe report out/results` shows frozen probes and trained settings in one table);
``out/finetune/<dataset>/<backbone>__<setting>__<key>/`` holds ``last.pt`` (every epoch), ``best.pt`` (the best
validation epoch, evaluated on test), ``log.json`` / ``log.csv``, ``summary.json`` and the curves PNG the CLI draws.

A run is resumable: re-running the same command continues from ``last.pt``; a finished run (its rows and
predictions present) is skipped unless ``force``.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fmprobe._io import atomic_write_text, default_workers, slug
from fmprobe.backbones import BackboneSpec, create_backbone, get_spec, parse_name, resolve_weights, weights_label
from fmprobe.backbones.weights import sha256_file
from fmprobe.datasets import Dataset, load_dataset
from fmprobe.datasets.base import digest_parts
from fmprobe.errors import FmprobeError
from fmprobe.finetune import checkpoint as ckpt
from fmprobe.finetune.data import check_files_exist, derive_seed
from fmprobe.finetune.ddp import Dist, barrier, setup, teardown
from fmprobe.finetune.model import FinetuneModel
from fmprobe.finetune.options import RunOptions, recipe_and_options
from fmprobe.finetune.recipe import Head, Recipe
from fmprobe.finetune.trainer import Outcome, Trainer, write_log
from fmprobe.metrics import compute_all
from fmprobe.metrics.aggregate import Aggregated, evaluation_rows
from fmprobe.results import CellInfo, compact_results, done_cells, write_cell
from fmprobe.runtime import choose_device, choose_dtype
from fmprobe.tasks import SPLIT_NAMES, TEST, TRAIN, VAL

log = logging.getLogger(__name__)
TOKENS_READOUT = "tokens"  # the readout column of the attention setting: it reads all patch tokens


@dataclass(frozen=True)
class FinetuneResult:
    run_dir: Path
    results_dir: Path
    cell_id: str
    probe: str
    primary_metric: str
    test: dict[str, tuple[float | None, float | None, float | None]]  # metric -> (value, ci_low, ci_high)
    best_epoch: int
    epochs_run: int
    val_score: float
    compute_dtype: str
    device: str
    world_size: int
    skipped: bool
    seconds: float
    rank: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    model: Any = field(
        default=None, repr=False, compare=False
    )  # the trained FinetuneModel (best epoch); None if skipped

    @property
    def log_path(self) -> Path:
        return self.run_dir / "log.json"

    @property
    def is_main(self) -> bool:
        return self.rank == 0


@dataclass(frozen=True)
class FinetunePlan:
    """Everything that identifies a run, decided before any network is built: what it reads, its run key (the
    digest of ``config``), the results cell and where it writes."""

    data: Dataset
    backbone: str
    spec: BackboneSpec
    recipe: Recipe
    options: RunOptions
    resolved: tuple[Path | None, str]  # the weights file (None: random init) and its digest
    resolution: int
    readout: str
    compute_dtype: str
    config: dict[str, Any]
    key: str
    cell: CellInfo
    run_dir: Path
    results_dir: Path

    @property
    def weights_label(self) -> str:
        return weights_label(self.options.weights, self.resolved, self.backbone)

    @property
    def cell_id(self) -> str:
        return self.cell.cell_id


def run_finetune(
    dataset: str | Dataset,
    backbone: str,
    recipe: Recipe | None = None,
    options: RunOptions | None = None,
    **keywords: Any,
) -> FinetuneResult:
    """Train ``recipe.setting`` of ``backbone`` on ``dataset``, pick the best validation epoch, test it, append rows.

    The rows are those ``fmprobe probe`` writes, so trained settings sit next to the frozen probes in one report.
    Resumable and skipped when already done (unless ``options.force``). Under ``torchrun`` every rank calls this;
    rank 0 writes checkpoints, logs and rows (the others return the same result object with ``rank`` set).

    Parameters
    ----------
    dataset : str or Dataset
        A dataset spec (:func:`fmprobe.load_dataset`) or a loaded dataset; it needs train, val and test splits.
    backbone : str
        A registered backbone name (``fmprobe models``), ``NAME:random`` for its random-init control.
    recipe : Recipe or None, optional
        What trains and how (default: the study's :class:`Recipe`).
    options : RunOptions or None, optional
        How the run runs: output folder, device, dtype, seed, ... (default: :class:`RunOptions`).
    **keywords
        Flat fields of either record (``setting=``, ``epochs=``, ``out=``, ...), instead of the two records.

    Returns
    -------
    FinetuneResult
        ``run_dir``, ``results_dir``, ``cell_id``, ``probe``, the ``test`` metrics (value, CI), ``best_epoch``,
        ``epochs_run``, ``val_score``, ``history`` and the trained ``model`` (None when ``skipped``).

    Raises
    ------
    fmprobe.finetune.FinetuneError
        A bad setting or option, an unsupported architecture, or out of memory (the message names the fix).
    TypeError
        Both records and flat keywords were given.
    fmprobe.errors.FmprobeError
        The dataset lacks a split, or its weights or data cannot be read.

    Examples
    --------
    >>> from fmprobe import Recipe, RunOptions, run_finetune
    >>> result = run_finetune("demo", "efficientnet_lite0_imagenet", Recipe(setting="linear", epochs=5),
    ...                       RunOptions(out="runs", device="cpu"))  # doctest: +SKIP
    >>> result.test[result.primary_metric]  # doctest: +SKIP
    >>> run_finetune("demo", "efficientnet_lite0_imagenet", setting="partial:2", epochs=3, out="runs")  # doctest: +SKIP
    """
    started = time.perf_counter()
    recipe, options = _records(recipe, options, keywords)
    data = _load(dataset, options)
    info = setup(_device_name(options))
    try:
        plan = plan_finetune(data, backbone, recipe, options, info.device)
        if not options.force and plan.cell_id in done_cells(plan.results_dir):
            if info.main:
                log.info(
                    f"{recipe.probe_name} of {backbone} on {data.name} is already in {plan.results_dir} "
                    f"(cell {plan.cell_id}); use --force to redo it"
                )
            return _finished(plan, info, started)
        _prepare_run_dir(plan, info)
        return _execute(plan, info, started)
    finally:
        teardown(info)


def _records(recipe: Recipe | None, options: RunOptions | None, keywords: dict[str, Any]) -> tuple[Recipe, RunOptions]:
    if not keywords:
        return recipe or Recipe(), options or RunOptions()
    if recipe is not None or options is not None:
        raise TypeError("run_finetune: pass either recipe/options or their fields as keywords, not both")
    return recipe_and_options(keywords)


def _device_name(options: RunOptions) -> str:
    return str(getattr(options.device, "value", options.device))


def _load(dataset: str | Dataset, options: RunOptions) -> Dataset:
    data = dataset if isinstance(dataset, Dataset) else load_dataset(dataset, options.max_images)
    missing = [s for s in SPLIT_NAMES if s not in data.splits or len(data.splits[s]) == 0]
    if missing:
        raise FmprobeError(
            f"{data.name}: finetuning needs train, val and test splits; {', '.join(missing)} missing or empty."
        )
    return data


def plan_finetune(
    data: Dataset, backbone: str, recipe: Recipe, options: RunOptions, device: torch.device | None = None
) -> FinetunePlan:
    """The run's identity: weights, resolution, readout, compute dtype, run key, results cell and folders.
    Nothing is built or written; ``device`` (default: what ``options.device`` picks here) decides the dtype."""
    device = device or choose_device(_device_name(options))
    spec = get_spec(parse_name(backbone)[0])
    resolved = resolve_weights(backbone, options.weights, options.seed)
    size = int(options.resolution or spec.native_resolution)
    compute_dtype = choose_dtype(device, options.dtype.value)
    readout = TOKENS_READOUT if recipe.kind == "attention" else spec.default_readout
    head_digest = ""
    if recipe.kind == "attention" and recipe.head is Head.deit and options.head_weights is not None:
        head_digest = sha256_file(Path(options.head_weights))[:16]
    config: dict[str, Any] = {
        "dataset": data.name, "dataset_digest": data.content_digest, "backbone": backbone,
        "weights_digest": resolved[1], "preprocess": json.dumps(spec.preprocess.at(size).to_dict(), sort_keys=True),
        "resolution": size, "readout": readout, "recipe": recipe.to_json(), "compute_dtype": compute_dtype,
        "seed": options.seed, "head_weights": head_digest, "num_classes": len(data.class_names), "format": ckpt.FORMAT,
    }  # fmt: skip
    key = digest_parts(config)[:16]
    cell = CellInfo(
        dataset=data.name, task=data.task, backbone=backbone, weights=weights_label(options.weights, resolved, backbone),
        readout=readout, resolution=size, probe=recipe.probe_name, train_fraction=1.0, repeat=0, seed=options.seed,
        fingerprint=key,
        imagenet_baseline=spec.imagenet_baseline and options.weights is None and resolved[0] is not None,
    )  # fmt: skip
    run_dir = options.out / "finetune" / slug(data.name) / f"{slug(backbone)}__{slug(recipe.setting)}__{key}"
    return FinetunePlan(data, backbone, spec, recipe, options, resolved, size, readout, compute_dtype, config, key,
                        cell, run_dir, options.out / "results")  # fmt: skip


def _prepare_run_dir(plan: FinetunePlan, info: Dist) -> None:
    """``force`` starts afresh; the run folder exists and every image file is there before anything is built."""
    if plan.options.force and info.main and plan.run_dir.exists():
        shutil.rmtree(plan.run_dir)
    barrier(info)
    plan.run_dir.mkdir(parents=True, exist_ok=True)
    check_files_exist([plan.data.splits[s] for s in SPLIT_NAMES], plan.data.name)


def _result(plan: FinetunePlan, info: Dist, started: float, skipped: bool, test: dict, history: list,
            best_epoch: int, val_score: float, model: Any = None) -> FinetuneResult:  # fmt: skip
    return FinetuneResult(
        plan.run_dir, plan.results_dir, plan.cell_id, plan.recipe.probe_name, plan.data.primary_metric, test,
        best_epoch, len(history), val_score, plan.compute_dtype, str(info.device), info.world, skipped,
        time.perf_counter() - started, info.rank, history, model,
    )  # fmt: skip


def _finished(plan: FinetunePlan, info: Dist, started: float) -> FinetuneResult:
    """A run whose rows are already in the results: what its summary and log say."""
    summary = _read_json(plan.run_dir / "summary.json", {})
    test = {k: tuple(v) for k, v in summary.get("test", {}).items()}
    history = _read_json(plan.run_dir / "log.json", [])
    return _result(plan, info, started, True, test, history, summary.get("best_epoch", 0),
                   summary.get("val_score", float("nan")))  # fmt: skip


def _build(plan: FinetunePlan, info: Dist) -> Trainer:
    """The backbone with its weights, the head (seeded), and the trainer around them."""
    options, data = plan.options, plan.data
    loaded = create_backbone(plan.backbone, resolution=plan.resolution, seed=options.seed, resolved=plan.resolved)
    torch.manual_seed(derive_seed(options.seed, 5))  # the head's initialisation
    head_weights = str(options.head_weights) if options.head_weights else None
    model = FinetuneModel(loaded.model, plan.spec.default_readout, _num_outputs(data), plan.recipe, plan.resolution,
                          head_weights)  # fmt: skip
    return Trainer(
        model, {s: data.splits[s] for s in SPLIT_NAMES}, recipe=plan.recipe, task=data.task,
        primary=data.primary_metric, transform=loaded.transform(), seed=options.seed, dist=info,
        compute_dtype=plan.compute_dtype, run_dir=plan.run_dir, config=plan.config,
        workers=default_workers() if options.workers is None else options.workers, progress=options.progress,
    )  # fmt: skip


def _execute(plan: FinetunePlan, info: Dist, started: float) -> FinetuneResult:
    """Build, train, test the best epoch; rank 0 writes the log, predictions, rows and summary."""
    trainer = _build(plan, info)
    recipe = plan.recipe
    if info.main:
        n_trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
        processes = f", {info.world} processes" if info.enabled else ""
        log.info(
            f"finetune {recipe.setting} of {plan.backbone} on {plan.data.name} at {plan.resolution}px: "
            f"{n_trainable / 1e6:.2f}M trained parameters, {info.device} ({plan.compute_dtype}{processes}), batch "
            f"{recipe.batch_size}, up to {recipe.epochs} epochs -> {plan.run_dir}"
        )
    outcome = trainer.fit()
    best_epoch = trainer.load_best()
    scores, _ = trainer.predict(TEST)
    rows = _test_rows(plan.data, scores)
    values = compute_all(rows.y_true, rows.y_score, plan.data.task, n_resamples=plan.options.n_bootstrap,
                         seed=plan.options.seed, label_names=plan.data.class_names,
                         label_sets=plan.data.evaluation.get("label_sets"))  # fmt: skip
    values = {name: replace(v, detail="; ".join(filter(None, (rows.detail, v.detail)))) for name, v in values.items()}
    test = {m: (v.value, v.ci_low, v.ci_high) for m, v in values.items()}
    if info.main:
        _write_outputs(plan, info, outcome, best_epoch, rows, values, test)
    barrier(info)
    return _result(plan, info, started, False, test, outcome.history, best_epoch, outcome.best_score, trainer.model)


def _test_rows(data: Dataset, scores: np.ndarray) -> Aggregated:
    """The test rows fine-tuning is scored on: the images, or one per study when the dataset aggregates (as probing)."""
    split = data.splits[TEST]
    return evaluation_rows(split.ids, split.labels, scores, split.metadata, data.evaluation, data.spec)


def _write_outputs(
    plan: FinetunePlan, info: Dist, outcome: Outcome, best_epoch: int, rows: Aggregated, values: dict, test: dict
) -> None:
    """The log, the test predictions, the result rows and ``summary.json`` (rank 0)."""
    data, recipe = plan.data, plan.recipe
    write_log(plan.run_dir, outcome.history)
    params = {**recipe.to_dict(), "chosen_epoch": best_epoch, "epochs_run": len(outcome.history),
              "stopped_early": outcome.stopped_early, "compute_dtype": plan.compute_dtype, "head_input": plan.readout}  # fmt: skip
    write_cell(
        plan.results_dir, plan.cell, values, ids=rows.ids, y_true=rows.y_true, y_score=rows.y_score,
        meta={"task": data.task, "class_names": list(data.class_names), "dataset": data.name,
              "backbone": plan.backbone, "readout": plan.readout, "probe": recipe.probe_name,
              "run_dir": str(plan.run_dir)},
        primary=data.primary_metric, params=params, n_train=len(data.splits[TRAIN]), val_score=outcome.best_score,
        n_val=len(data.splits[VAL]),
    )  # fmt: skip
    compact_results(plan.results_dir)
    summary = {"cell_id": plan.cell_id, "probe": recipe.probe_name, "best_epoch": best_epoch,
               "val_score": outcome.best_score, "primary_metric": data.primary_metric, "test": test, "params": params,
               "world_size": info.world}  # fmt: skip
    atomic_write_text(plan.run_dir / "summary.json", json.dumps(summary, indent=1, default=str))
    primary = test.get(data.primary_metric, (None, None, None))
    log.info(
        f"best epoch {best_epoch}: val {data.primary_metric} {outcome.best_score:.4f}; test "
        f"{data.primary_metric} {_fmt(primary)}; rows in {plan.results_dir}"
    )


def _num_outputs(data: Dataset) -> int:
    labels = data.splits[TRAIN].labels
    return int(labels.shape[1]) if labels.ndim == 2 else len(data.class_names)


def _fmt(v: tuple[float | None, float | None, float | None]) -> str:
    value, low, high = v
    if value is None:
        return "n/a"
    return f"{value:.4f}" + (f" [{low:.4f}, {high:.4f}]" if low is not None and high is not None else "")


def _read_json(path: Path, empty: Any) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return empty

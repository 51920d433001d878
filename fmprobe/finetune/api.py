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
import re
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fmprobe.backbones import create_backbone, get_spec, parse_name, resolve_weights, weights_label
from fmprobe.backbones.weights import sha256_file
from fmprobe.datasets import Dataset, load_dataset
from fmprobe.datasets.base import digest_parts
from fmprobe.errors import FmprobeError
from fmprobe.finetune import checkpoint as ckpt
from fmprobe.finetune.data import check_files_exist, default_workers, derive_seed
from fmprobe.finetune.ddp import barrier, setup, teardown
from fmprobe.finetune.model import FinetuneModel
from fmprobe.finetune.recipe import Recipe
from fmprobe.finetune.trainer import Trainer, write_log
from fmprobe.metrics import compute_all
from fmprobe.results import ResultRow, append_rows, cell_id, done_cells, save_predictions
from fmprobe.runtime import choose_dtype

Log = Callable[[str], None]
TOKENS_READOUT = "tokens"  # the readout column of the attention setting: it reads all patch tokens


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


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


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "x"


def run_finetune(
    dataset: str | Dataset,
    backbone: str,
    *,
    setting: str = "linear",
    weights: str | Path | None = None,
    epochs: int = 100,
    lr: float = 1e-4,
    batch_size: int = 64,
    resolution: int | None = None,
    weight_decay: float = 1e-5,
    warmup_epochs: int = 5,
    schedule: str = "constant",
    grad_clip: float = 1.0,
    layer_decay: float | None = None,
    patience: int | None = None,
    balance: str = "none",
    grad_checkpointing: bool = False,
    head: str = "small",
    head_weights: str | Path | None = None,
    device: str = "auto",
    dtype: str = "auto",
    seed: int = 0,
    out: str | Path = "runs",
    workers: int | None = None,
    max_images_per_split: int | None = None,
    n_resamples: int = 1000,
    force: bool = False,
    progress: bool = True,
    log: Log = _stderr,
) -> FinetuneResult:
    """Train ``setting`` of ``backbone`` on ``dataset``, pick the best validation epoch, test it, append rows.

    Under ``torchrun`` every rank calls this; rank 0 writes checkpoints, logs and rows (the others return the same
    result object with ``rank`` set).
    """
    started = time.perf_counter()
    recipe = Recipe(
        setting=setting, epochs=epochs, lr=lr, weight_decay=weight_decay, batch_size=batch_size,
        warmup_epochs=warmup_epochs, schedule=schedule, grad_clip=grad_clip, layer_decay=layer_decay,
        patience=patience, balance=balance, grad_checkpointing=grad_checkpointing, head=head,
    )  # fmt: skip
    data = dataset if isinstance(dataset, Dataset) else load_dataset(dataset, max_images_per_split)
    missing = [s for s in ("train", "val", "test") if s not in data.splits or len(data.splits[s]) == 0]
    if missing:
        raise FmprobeError(
            f"{data.name}: finetuning needs train, val and test splits; {', '.join(missing)} missing or empty."
        )
    base, _ = parse_name(backbone)
    spec = get_spec(base)
    resolved = resolve_weights(backbone, weights, seed)
    size = int(resolution or spec.native_resolution)
    info = setup(device)
    try:
        log_main: Log = log if info.main else (lambda m: None)
        compute_dtype = choose_dtype(info.device, dtype)
        readout = TOKENS_READOUT if recipe.kind == "attention" else spec.default_readout
        head_digest = ""
        if recipe.kind == "attention" and recipe.head == "deit" and head_weights is not None:
            head_digest = sha256_file(Path(head_weights))[:16]
        preprocess = spec.preprocess.at(size)
        config: dict[str, Any] = {
            "dataset": data.name, "dataset_digest": data.content_digest, "backbone": backbone,
            "weights_digest": resolved[1], "preprocess": json.dumps(preprocess.to_dict(), sort_keys=True),
            "resolution": size, "readout": readout, "recipe": recipe.to_json(), "compute_dtype": compute_dtype,
            "seed": seed, "head_weights": head_digest, "num_classes": len(data.class_names), "format": ckpt.FORMAT,
        }  # fmt: skip
        key = digest_parts(config)[:16]
        label = weights_label(weights, resolved)
        cid = cell_id(
            dataset=data.name, backbone=backbone, weights=label, readout=readout, resolution=size,
            probe=recipe.probe_name, train_fraction=1.0, repeat=0, seed=seed, fingerprint=key,
        )  # fmt: skip
        out = Path(out)
        results_dir = out / "results"
        run_dir = out / "finetune" / slug(data.name) / f"{slug(backbone)}__{slug(recipe.setting)}__{key}"

        def result(
            skipped: bool, test: dict, history: list, best_epoch: int, val_score: float, model: Any = None
        ) -> FinetuneResult:
            return FinetuneResult(
                run_dir, results_dir, cid, recipe.probe_name, data.primary_metric, test, best_epoch, len(history),
                val_score, compute_dtype, str(info.device), info.world, skipped, time.perf_counter() - started,
                info.rank, history, model,
            )  # fmt: skip

        if not force and cid in done_cells(results_dir):
            log_main(
                f"{recipe.probe_name} of {backbone} on {data.name} is already in {results_dir} (cell {cid}); use --force to redo it"
            )
            return result(
                True,
                _summary_test(run_dir),
                _history(run_dir),
                _summary(run_dir).get("best_epoch", 0),
                _summary(run_dir).get("val_score", float("nan")),
            )
        if force and info.main and run_dir.exists():
            shutil.rmtree(run_dir)
        barrier(info)
        run_dir.mkdir(parents=True, exist_ok=True)
        check_files_exist([data.splits[s] for s in ("train", "val", "test")], data.name)

        loaded = create_backbone(backbone, resolution=size, seed=seed, resolved=resolved)
        torch.manual_seed(derive_seed(seed, 5))  # the head's initialisation
        model = FinetuneModel(
            loaded.model,
            spec.default_readout,
            _num_outputs(data),
            recipe,
            size,
            str(head_weights) if head_weights else None,
        )
        n_workers = default_workers() if workers is None else workers
        transform = loaded.transform()
        trainer = Trainer(
            model, {s: data.splits[s] for s in ("train", "val", "test")}, recipe=recipe, task=data.task,
            primary=data.primary_metric, normalise=transform.normalise_batch, interpolation=preprocess.interpolation,
            resolution=size, seed=seed, dist=info, compute_dtype=compute_dtype, run_dir=run_dir, config=config,
            workers=n_workers, progress=progress, log=log_main,
        )  # fmt: skip
        n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        log_main(
            f"finetune {recipe.setting} of {backbone} on {data.name} at {size}px: {n_trainable / 1e6:.2f}M trained parameters, "
            f"{info.device} ({compute_dtype}{f', {info.world} processes' if info.enabled else ''}), batch {recipe.batch_size}, "
            f"up to {recipe.epochs} epochs -> {run_dir}"
        )
        outcome = trainer.fit()
        best_epoch = trainer.load_best()
        scores, _ = trainer.predict("test")
        test_split = data.splits["test"]
        values = compute_all(test_split.labels, scores, data.task, n_resamples=n_resamples, seed=seed)
        test = {m: (v.value, v.ci_low, v.ci_high) for m, v in values.items()}
        if info.main:
            write_log(run_dir, outcome.history)
            params = {**recipe.to_dict(), "chosen_epoch": best_epoch, "epochs_run": len(outcome.history),
                      "stopped_early": outcome.stopped_early, "compute_dtype": compute_dtype, "head_input": readout}  # fmt: skip
            prediction_path = save_predictions(
                results_dir, cid, test_split.ids, test_split.labels, scores,
                {"task": data.task, "class_names": list(data.class_names), "dataset": data.name, "backbone": backbone,
                 "readout": readout, "probe": recipe.probe_name, "run_dir": str(run_dir)},
            )  # fmt: skip
            rows = [
                ResultRow(
                    dataset=data.name,
                    task=data.task,
                    backbone=backbone.removesuffix(":random"),
                    weights=label,
                    readout=readout,
                    resolution=size,
                    probe=recipe.probe_name,
                    params=json.dumps(params, sort_keys=True, default=str),
                    train_fraction=1.0,
                    repeat=0,
                    seed=seed,
                    metric=metric,
                    value=float("nan") if v.value is None else float(v.value),
                    ci_low=float("nan") if v.ci_low is None else float(v.ci_low),
                    ci_high=float("nan") if v.ci_high is None else float(v.ci_high),
                    missing_reason=v.reason or "",
                    is_primary=metric == data.primary_metric,
                    n_train=len(data.splits["train"]),
                    n_test=len(test_split),
                    val_score=float(outcome.best_score),
                    fingerprint=key,
                    cell_id=cid,
                    predictions=prediction_path,
                )  # fmt: skip
                for metric, v in values.items()
            ]
            append_rows(results_dir, rows)
            summary = {"cell_id": cid, "probe": recipe.probe_name, "best_epoch": best_epoch, "val_score": outcome.best_score,
                       "primary_metric": data.primary_metric, "test": test, "params": params, "world_size": info.world}  # fmt: skip
            (run_dir / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
            primary = test.get(data.primary_metric, (None, None, None))
            log_main(
                f"best epoch {best_epoch}: val {data.primary_metric} {outcome.best_score:.4f}; test "
                f"{data.primary_metric} {_fmt(primary)}; rows in {results_dir}"
            )
        barrier(info)
        return result(False, test, outcome.history, best_epoch, outcome.best_score, model)
    finally:
        teardown(info)


def _num_outputs(data: Dataset) -> int:
    labels = data.splits["train"].labels
    return int(labels.shape[1]) if labels.ndim == 2 else len(data.class_names)


def _fmt(v: tuple[float | None, float | None, float | None]) -> str:
    value, low, high = v
    if value is None:
        return "n/a"
    return f"{value:.4f}" + (f" [{low:.4f}, {high:.4f}]" if low is not None and high is not None else "")


def _summary(run_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return {}


def _summary_test(run_dir: Path) -> dict[str, Any]:
    return {k: tuple(v) for k, v in _summary(run_dir).get("test", {}).items()}


def _history(run_dir: Path) -> list[dict[str, Any]]:
    try:
        return json.loads((run_dir / "log.json").read_text())
    except (OSError, ValueError):
        return []

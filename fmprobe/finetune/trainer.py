"""The training loop: epochs of AdamW steps with warm-up, clipping and mixed precision; validation every epoch;
a checkpoint after every epoch; the best validation epoch kept for the test.

Determinism (CPU, fixed seed): everything random in epoch ``e`` is seeded from (seed, e): the sample order and each
sample's augmentation (see ``data``), and the global python / numpy / torch RNGs (dropout, drop-path) at the start
of the epoch. The optimizer, scheduler and scaler states come back from the checkpoint. A run killed at any point
restarts the interrupted epoch from the last checkpoint and reaches bit-identical weights.
"""

from __future__ import annotations

import csv
import inspect
import io
import json
import logging
import math
import os
import random
import signal
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from fmprobe._io import atomic_write_text
from fmprobe.backbones import ImageTransform
from fmprobe.datasets import Split
from fmprobe.errors import ImageError
from fmprobe.finetune import checkpoint as ckpt
from fmprobe.finetune.data import Batches, Samples, class_weights, derive_seed, eval_plan, make_loader, train_plan
from fmprobe.finetune.ddp import Dist, all_reduce_sum, barrier, broadcast_flag, gather_rows
from fmprobe.finetune.model import FinetuneModel
from fmprobe.finetune.recipe import Balance, FinetuneError, Recipe, lr_factor
from fmprobe.metrics import compute_all
from fmprobe.progress import progress as progress_bar
from fmprobe.runtime import autocast
from fmprobe.tasks import SPLIT_NAMES, TRAIN, VAL

log = logging.getLogger(__name__)

# Test-only: SIGKILL this process right after its N-th optimizer step, so resume tests kill at an exact point.
KILL_AFTER_STEPS = "FMPROBE_TEST_KILL_AFTER_STEPS"


@dataclass
class Outcome:
    history: list[dict[str, Any]]
    best_epoch: int  # 1-based
    best_score: float
    stopped_early: bool
    resumed_from: int  # completed epochs found in the checkpoint (0: fresh start)
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Progress:
    """Where a run stands: completed epochs, their log, the best one, early stopping, and the last epoch's news."""

    start: int
    epoch: int
    history: list[dict[str, Any]]
    best: dict[str, Any]
    stopped: bool
    durations: list[float]
    improved: bool = False
    score: float = float("nan")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def write_log(run_dir: Path, history: list[dict[str, Any]]) -> Path:
    """``log.json`` and ``log.csv``: one entry per finished epoch."""
    atomic_write_text(run_dir / "log.json", json.dumps(history, indent=1))
    buffer = io.StringIO()
    if history:
        writer = csv.DictWriter(buffer, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)
    atomic_write_text(run_dir / "log.csv", buffer.getvalue())
    return run_dir / "log.json"


def _ddp(model: nn.Module, recipe: Recipe, device: torch.device) -> nn.Module:
    """DistributedDataParallel around ``model``; frozen BatchNorm statistics are equal everywhere: no sync."""
    buffers = {}
    if not recipe.trains_backbone:
        sync = "forward_sync_buffers" in inspect.signature(nn.parallel.DistributedDataParallel).parameters
        buffers = {"forward_sync_buffers" if sync else "broadcast_buffers": False}
    # a [1, 1, D] class token's gradient is a strided view; harmless, and only a performance note
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    return nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None, **buffers
    )


class Trainer:
    def __init__(
        self,
        model: FinetuneModel,
        splits: dict[str, Split],
        *,
        recipe: Recipe,
        task: str,
        primary: str,
        transform: ImageTransform,
        seed: int,
        dist: Dist,
        compute_dtype: str,
        run_dir: Path,
        config: dict[str, Any],
        workers: int,
        progress: bool = True,
    ) -> None:
        self.recipe, self.task, self.primary, self.seed, self.dist = recipe, task, primary, seed, dist
        self.device, self.dtype, self.run_dir, self.config = dist.device, compute_dtype, run_dir, config
        self.progress, self.transform, self.splits = progress and dist.main, transform, splits
        self.labels = {name: np.asarray(splits[name].labels) for name in SPLIT_NAMES}
        self.multilabel = self.labels[TRAIN].ndim == 2
        self.num_outputs = self.labels[TRAIN].shape[1] if self.multilabel else int(config["num_classes"])
        self._place(model)
        self._optimize(len(splits[TRAIN]))
        self._balance()
        self.generator = torch.Generator().manual_seed(derive_seed(seed, 3))
        self.batches = Batches()
        samples = Samples([splits[name] for name in SPLIT_NAMES], transform)
        self.loader = make_loader(samples, self.batches, workers, self.device.type == "cuda", self.generator)
        self._steps_taken, self._kill_after = 0, int(os.environ.get(KILL_AFTER_STEPS) or 0)

    def _place(self, model: FinetuneModel) -> None:
        """The model on its device (channels-last where the backbone prefers it), wrapped in DDP under torchrun."""
        self.model = model.to(self.device)
        self.channels_last = bool(getattr(model.backbone, "channels_last", False))
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.net: nn.Module = self.model
        if self.dist.enabled:
            if self.recipe.trains_backbone and self.device.type == "cuda":
                self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
            self.net = _ddp(self.model, self.recipe, self.device)

    def _optimize(self, n_train: int) -> None:
        """AdamW, the warm-up + schedule as a LambdaLR over optimizer steps, and the fp16 loss scaler."""
        recipe = self.recipe
        self.optimizer = torch.optim.AdamW(self.model.param_groups(recipe.lr, recipe.weight_decay, recipe.layer_decay))
        plan = train_plan(n_train, recipe.batch_size, self.seed, 0, self.dist.rank, self.dist.world)[0]
        self.steps_per_epoch = len(plan)
        if self.steps_per_epoch == 0:
            raise FinetuneError(f"the training split has {n_train} image(s): too few for one batch; need at least 2.")
        total = self.steps_per_epoch * recipe.epochs
        warm = recipe.warmup_steps(self.steps_per_epoch)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(step, total, warm, recipe.schedule)
        )
        self.scaler = torch.amp.GradScaler("cuda") if self.dtype == "fp16" else None

    def _balance(self) -> None:
        """Class weights in the loss, or balanced draws (single-label only), as the recipe says."""
        weights = class_weights(self.labels[TRAIN], self.num_outputs)
        self.loss_weights = None
        if self.recipe.balance is Balance.loss:
            self.loss_weights = torch.as_tensor(weights, dtype=torch.float32, device=self.device)
        self.sample_weights = None
        if self.recipe.balance is Balance.sampler:
            if self.multilabel:
                raise FinetuneError("--balance sampler needs single-label data; use --balance loss for multi-label.")
            self.sample_weights = weights[self.labels[TRAIN].astype(np.int64)]

    # ------------------------------------------------------------------------------------------ pieces

    def _images(self, pixels: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """uint8 pixels -> the backbone's normalised input (``ImageTransform.normalise_batch``, as extraction)."""
        images = self.transform.normalise_batch(pixels.to(self.device, non_blocking=True), valid.to(self.device))
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last else images

    def _targets(self, split: str, rows: list[int]) -> torch.Tensor:
        y = self.labels[split][rows]
        if self.multilabel:
            return torch.as_tensor(y, dtype=torch.float32, device=self.device)
        return torch.as_tensor(y.astype(np.int64), device=self.device)

    def _losses(self, logits: torch.Tensor, y: torch.Tensor, weighted: bool = True) -> torch.Tensor:
        """Per-sample losses (float32): cross-entropy, or binary cross-entropy averaged over labels."""
        logits = logits.float()
        w = self.loss_weights if weighted else None
        if self.multilabel:
            pos_weight = w if w is not None else None
            return F.binary_cross_entropy_with_logits(logits, y, pos_weight=pos_weight, reduction="none").mean(dim=1)
        return F.cross_entropy(logits, y, weight=w, reduction="none")

    def _scores(self, logits: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        return torch.sigmoid(logits) if self.multilabel else torch.softmax(logits, dim=1)

    def _check(self, error: str | None) -> None:
        if error is not None:
            raise ImageError(
                f"{error}\n(fmprobe finetune stops at a bad image: repair or remove it and re-run; "
                "the last checkpoint is kept.)"
            )

    @torch.no_grad()
    def predict(self, split: str, batch_size: int | None = None) -> tuple[np.ndarray, float]:
        """Scores ``[N, C]`` (or ``[N, L]``) of a split in its order, and the mean (unweighted) loss."""
        index = SPLIT_NAMES.index(split)
        n = len(self.splits[split])
        self.model.eval()
        self.batches.plan = eval_plan(index, n, batch_size or self.recipe.batch_size, self.dist.rank, self.dist.world)
        scores, losses = [np.zeros((0, self.num_outputs))], [np.zeros(0)]
        for rows, pixels, valid, error in self.loader:
            self._check(error)
            with autocast(self.device, self.dtype):  # type: ignore[arg-type]
                logits = self.model(self._images(pixels, valid))
            scores.append(self._scores(logits).double().cpu().numpy())
            losses.append(self._losses(logits, self._targets(split, rows), weighted=False).double().cpu().numpy())
        all_scores, all_losses = gather_rows(self.dist, np.concatenate(scores), np.concatenate(losses))
        return all_scores, float(all_losses.mean()) if len(all_losses) else float("nan")

    def _metric(self, split: str, scores: np.ndarray) -> float:
        value = compute_all(self.labels[split], scores, self.task, metrics=[self.primary])[self.primary].value
        return float("nan") if value is None else float(value)

    def _train_epoch(self, epoch: int, bar: tqdm) -> tuple[float, int]:
        seed_everything(derive_seed(self.seed, epoch, 4, self.dist.rank))  # dropout / drop-path of this epoch
        self.generator.manual_seed(derive_seed(self.seed, epoch, 3))
        plan, sizes = train_plan(
            len(self.splits[TRAIN]), self.recipe.batch_size, self.seed, epoch, self.dist.rank, self.dist.world,
            self.sample_weights,
        )  # fmt: skip
        self.batches.plan = plan
        self.net.train()  # reaches only the trained modules (FinetuneModel.train)
        loss_sum, seen = 0.0, 0
        for (rows, pixels, valid, error), global_size in zip(self.loader, sizes, strict=True):
            self._check(error)
            per_sample = self._step(self._images(pixels, valid), self._targets(TRAIN, rows), global_size)
            loss_sum += float(per_sample.detach().sum())
            seen += len(rows)
            bar.update(1)
            bar.set_postfix_str(f"loss {loss_sum / max(seen, 1):.4f}", refresh=False)
        total_loss, total_seen = all_reduce_sum(self.dist, [loss_sum, float(seen)])
        return total_loss / max(total_seen, 1.0), int(total_seen)

    def _step(self, images: torch.Tensor, y: torch.Tensor, global_size: int) -> torch.Tensor:
        """One optimizer step; returns the per-sample losses."""
        with autocast(self.device, self.dtype):  # type: ignore[arg-type]
            logits = self.net(images)
        per_sample = self._losses(logits, y)
        # Normalised by the *global* batch: DDP averages gradients over ranks, so the sum is the 1-process mean.
        loss = per_sample.sum() * (self.dist.world / global_size)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        if self.recipe.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.trainable, self.recipe.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        self._steps_taken += 1
        if self._steps_taken == self._kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
        return per_sample

    # ------------------------------------------------------------------------------------------ checkpoints

    def _state(self, epoch: int, best: dict[str, Any], history: list[dict[str, Any]], stopped: bool) -> dict[str, Any]:
        return {
            "format": ckpt.FORMAT,
            "config": self.config,
            "epoch": epoch,  # completed epochs
            "model": self.model.trainable_state(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else {},
            "rng": ckpt.rng_state(self.generator),
            "best": best,
            "history": history,
            "stopped": stopped,
        }

    def _resume(self) -> dict[str, Any] | None:
        path = self.run_dir / ckpt.LAST
        if not path.exists():
            return None
        state = ckpt.load(path)
        if state["config"] != self.config:
            changed = sorted(
                k for k in set(state["config"]) | set(self.config) if state["config"].get(k) != self.config.get(k)
            )
            raise FinetuneError(
                f"{path} was written by a run with different settings ({', '.join(changed)}); use --force to start "
                "afresh, or another --out."
            )
        self.model.load_trainable(state["model"], str(path))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        ckpt.set_rng_state(state["rng"], self.generator)
        return state

    def load_best(self) -> int:
        """Load the best validation epoch's weights; returns that epoch (1-based)."""
        if not (self.run_dir / ckpt.BEST).exists():
            raise FinetuneError(
                f"no epoch of {self.run_dir.name} reached a finite validation loss: training diverged. Lower --lr "
                "(or raise --warmup-epochs) and run again with --force."
            )
        state = ckpt.load(self.run_dir / ckpt.BEST)
        self.model.load_trainable(state["model"], str(self.run_dir / ckpt.BEST))
        return int(state["epoch"])

    # ------------------------------------------------------------------------------------------ the loop

    def fit(self) -> Outcome:
        """Train up to ``recipe.epochs`` (from the last checkpoint, if any), checkpointing after every epoch."""
        started = time.perf_counter()
        run = self._progress()
        try:
            while run.epoch < self.recipe.epochs and not run.stopped:
                self._epoch(run)
                if self.dist.main:
                    self._save(run)
                barrier(self.dist)
        except torch.cuda.OutOfMemoryError:
            raise FinetuneError(
                f"CUDA out of memory at batch size {self.recipe.batch_size} ({self.config['backbone']}, "
                f"{self.recipe.setting}, {self.config['resolution']}px). Lower --batch-size, add --grad-checkpointing "
                "(trains the backbone with less memory), or lower --resolution. Progress up to the last finished "
                "epoch is kept."
            ) from None
        best = run.best
        return Outcome(
            run.history, int(best["epoch"]), float(best["score"]), run.stopped, run.start, time.perf_counter() - started
        )

    def _progress(self) -> _Progress:
        """A fresh start, or where ``last.pt`` left off."""
        state = self._resume()
        if state is None:
            best = {"epoch": 0, "score": float("nan"), "key": [-math.inf, -math.inf]}
            return _Progress(0, 0, [], best, False, [])
        start, history = int(state["epoch"]), list(state["history"])
        run = _Progress(start, start, history, dict(state["best"]), bool(state["stopped"]),
                        [float(h["seconds"]) for h in history])  # fmt: skip
        if self.dist.main:
            log.info(
                f"resuming {self.run_dir.name} after epoch {start}/{self.recipe.epochs} "
                f"(best so far: epoch {run.best['epoch']})"
            )
        return run

    def _epoch(self, run: _Progress) -> None:
        """Train one epoch, validate, and update ``run`` (history, best epoch, early stopping)."""
        recipe, t0 = self.recipe, time.perf_counter()
        bar = progress_bar(total=self.steps_per_epoch, desc=f"epoch {run.epoch + 1}/{recipe.epochs}", unit="batch",
                           disable=not self.progress, leave=True)  # fmt: skip
        with bar:
            train_loss, seen = self._train_epoch(run.epoch, bar)
            val_scores, val_loss = self.predict(VAL)
            score = self._metric(VAL, val_scores)
            run.durations.append(time.perf_counter() - t0)
            remaining = (recipe.epochs - run.epoch - 1) * float(np.mean(run.durations[-5:]))
            bar.set_postfix_str(f"loss {train_loss:.4f} val {self.primary} {score:.4f} ETA {_duration(remaining)}")
        key = [score if math.isfinite(score) else -math.inf, -val_loss]
        run.epoch += 1
        run.improved, run.score = key > run.best["key"], score
        if run.improved:
            run.best = {"epoch": run.epoch, "score": score, "key": key}
        seconds = run.durations[-1]
        run.history.append({
            "epoch": run.epoch, "train_loss": train_loss, "val_loss": val_loss, f"val_{self.primary}": score,
            "lr": float(self.optimizer.param_groups[-1]["lr"]), "seconds": round(seconds, 3),
            "images_per_s": round(seen / max(seconds, 1e-9), 2), "best": run.improved,
        })  # fmt: skip
        stopped = bool(recipe.patience) and run.epoch - int(run.best["epoch"]) >= int(recipe.patience or 0)
        run.stopped = broadcast_flag(self.dist, stopped)

    def _save(self, run: _Progress) -> None:
        """Rank 0: ``best.pt`` when the epoch improved, ``last.pt`` and the log always."""
        if run.improved:
            best = {
                "format": ckpt.FORMAT,
                "epoch": run.epoch,
                "score": run.score,
                "model": self.model.trainable_state(),
            }
            ckpt.save_atomic(best, self.run_dir / ckpt.BEST)
        ckpt.save_atomic(self._state(run.epoch, run.best, run.history, run.stopped), self.run_dir / ckpt.LAST)
        write_log(self.run_dir, run.history)
        if run.stopped:
            log.info(
                f"early stop after epoch {run.epoch}: no better validation {self.primary} for {self.recipe.patience} "
                "epochs"
            )


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f}s"
    return f"{seconds / 60:.0f}min" if seconds < 7200 else f"{seconds / 3600:.1f}h"

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
import math
import os
import random
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from fmprobe.datasets import Split
from fmprobe.errors import ImageError
from fmprobe.finetune import checkpoint as ckpt
from fmprobe.finetune.data import (
    Augment,
    Batches,
    Samples,
    class_weights,
    derive_seed,
    eval_plan,
    make_loader,
    train_plan,
)
from fmprobe.finetune.ddp import Dist, all_reduce_sum, barrier, broadcast_flag, gather_rows
from fmprobe.finetune.model import FinetuneModel
from fmprobe.finetune.recipe import FinetuneError, Recipe, lr_factor
from fmprobe.metrics import compute_all
from fmprobe.runtime import autocast

Log = Callable[[str], None]
SPLITS = ("train", "val", "test")


@dataclass
class Outcome:
    history: list[dict[str, Any]]
    best_epoch: int  # 1-based
    best_score: float
    stopped_early: bool
    resumed_from: int  # completed epochs found in the checkpoint (0: fresh start)
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_log(run_dir: Path, history: list[dict[str, Any]]) -> Path:
    """``log.json`` and ``log.csv``: one entry per finished epoch."""
    _atomic_text(run_dir / "log.json", json.dumps(history, indent=1))
    buffer = io.StringIO()
    if history:
        writer = csv.DictWriter(buffer, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)
    _atomic_text(run_dir / "log.csv", buffer.getvalue())
    return run_dir / "log.json"


class Trainer:
    def __init__(
        self,
        model: FinetuneModel,
        splits: dict[str, Split],
        *,
        recipe: Recipe,
        task: str,
        primary: str,
        normalise: Callable[[torch.Tensor], torch.Tensor],
        interpolation: str,
        resolution: int,
        seed: int,
        dist: Dist,
        compute_dtype: str,
        run_dir: Path,
        config: dict[str, Any],
        workers: int,
        progress: bool = True,
        log: Log = lambda m: print(m, file=sys.stderr),
    ) -> None:
        self.recipe, self.task, self.primary, self.seed, self.dist = recipe, task, primary, seed, dist
        self.device, self.dtype, self.run_dir, self.config = dist.device, compute_dtype, run_dir, config
        self.progress, self.log, self.normalise = progress and dist.main, log, normalise
        self.splits = splits
        self.labels = {name: np.asarray(splits[name].labels) for name in SPLITS}
        self.multilabel = self.labels["train"].ndim == 2
        self.num_outputs = self.labels["train"].shape[1] if self.multilabel else int(config["num_classes"])
        self.model = model.to(self.device)
        self.channels_last = bool(getattr(model.backbone, "channels_last", False))
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.net: nn.Module = self.model
        if dist.enabled:
            if recipe.trains_backbone and self.device.type == "cuda":
                self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
            buffers = {}
            if not recipe.trains_backbone:  # frozen BatchNorm statistics are equal everywhere: no per-step sync
                sync = "forward_sync_buffers" in inspect.signature(nn.parallel.DistributedDataParallel).parameters
                buffers = {"forward_sync_buffers" if sync else "broadcast_buffers": False}
            self.net = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None, **buffers
            )
            # a [1, 1, D] class token's gradient is a strided view; harmless, and only a performance note
            warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
        self.optimizer = torch.optim.AdamW(self.model.param_groups(recipe.lr, recipe.weight_decay, recipe.layer_decay))
        n_train = len(splits["train"])
        self.steps_per_epoch = len(train_plan(n_train, recipe.batch_size, seed, 0, dist.rank, dist.world)[0])
        if self.steps_per_epoch == 0:
            raise FinetuneError(f"the training split has {n_train} image(s): too few for one batch; need at least 2.")
        total = self.steps_per_epoch * recipe.epochs
        warm = recipe.warmup_steps(self.steps_per_epoch)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(step, total, warm, recipe.schedule)
        )
        self.scaler = torch.amp.GradScaler("cuda") if compute_dtype == "fp16" else None
        weights = class_weights(self.labels["train"], self.num_outputs)
        self.loss_weights = (
            torch.as_tensor(weights, dtype=torch.float32, device=self.device) if recipe.balance == "loss" else None
        )
        self.sample_weights = None
        if recipe.balance == "sampler":
            if self.multilabel:
                raise FinetuneError("--balance sampler needs single-label data; use --balance loss for multi-label.")
            self.sample_weights = weights[self.labels["train"].astype(np.int64)]
        self.generator = torch.Generator().manual_seed(derive_seed(seed, 3))
        self.batches = Batches()
        train_aug = Augment(resolution, interpolation, train=True)
        eval_aug = Augment(resolution, interpolation, train=False)
        samples = Samples([splits[name] for name in SPLITS], train_aug, eval_aug)
        self.loader = make_loader(samples, self.batches, workers, self.device.type == "cuda", self.generator)

    # ------------------------------------------------------------------------------------------ pieces

    def _images(self, pixels: torch.Tensor) -> torch.Tensor:
        images = self.normalise(pixels.to(self.device, non_blocking=True))
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
        index = SPLITS.index(split)
        n = len(self.splits[split])
        self.model.eval()
        self.batches.plan = eval_plan(index, n, batch_size or self.recipe.batch_size, self.dist.rank, self.dist.world)
        scores, losses = [np.zeros((0, self.num_outputs))], [np.zeros(0)]
        for rows, pixels, error in self.loader:
            self._check(error)
            with autocast(self.device, self.dtype):  # type: ignore[arg-type]
                logits = self.model(self._images(pixels))
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
            len(self.splits["train"]),
            self.recipe.batch_size,
            self.seed,
            epoch,
            self.dist.rank,
            self.dist.world,
            self.sample_weights,
        )
        self.batches.plan = plan
        self.net.train()  # reaches only the trained modules (FinetuneModel.train)
        loss_sum, seen = 0.0, 0
        for (rows, pixels, error), global_size in zip(self.loader, sizes, strict=True):
            self._check(error)
            images, y = self._images(pixels), self._targets("train", rows)
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
            loss_sum += float(per_sample.detach().sum())
            seen += len(rows)
            bar.update(1)
            bar.set_postfix_str(f"loss {loss_sum / max(seen, 1):.4f}", refresh=False)
        total_loss, total_seen = all_reduce_sum(self.dist, [loss_sum, float(seen)])
        return total_loss / max(total_seen, 1.0), int(total_seen)

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
        recipe, main = self.recipe, self.dist.main
        started = time.perf_counter()
        state = self._resume()
        start = int(state["epoch"]) if state else 0
        history: list[dict[str, Any]] = list(state["history"]) if state else []
        best: dict[str, Any] = (
            dict(state["best"]) if state else {"epoch": 0, "score": float("nan"), "key": [-math.inf, -math.inf]}
        )
        stopped = bool(state["stopped"]) if state else False
        if state and main:
            self.log(
                f"resuming {self.run_dir.name} after epoch {start}/{recipe.epochs} (best so far: epoch {best['epoch']})"
            )
        durations = [float(h["seconds"]) for h in history]
        epoch = start
        try:
            while epoch < recipe.epochs and not stopped:
                t0 = time.perf_counter()
                desc = f"epoch {epoch + 1}/{recipe.epochs}"
                with tqdm(
                    total=self.steps_per_epoch,
                    desc=desc,
                    unit="batch",
                    disable=not self.progress,
                    file=sys.stderr,
                    dynamic_ncols=True,
                    leave=True,
                ) as bar:
                    train_loss, seen = self._train_epoch(epoch, bar)
                    val_scores, val_loss = self.predict("val")
                    score = self._metric("val", val_scores)
                    durations.append(time.perf_counter() - t0)
                    remaining = (recipe.epochs - epoch - 1) * float(np.mean(durations[-5:]))
                    bar.set_postfix_str(
                        f"loss {train_loss:.4f} val {self.primary} {score:.4f} ETA {_duration(remaining)}"
                    )
                key = [score if math.isfinite(score) else -math.inf, -val_loss]
                epoch += 1
                improved = key > best["key"]
                if improved:
                    best = {"epoch": epoch, "score": score, "key": key}
                history.append({
                    "epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, f"val_{self.primary}": score,
                    "lr": float(self.optimizer.param_groups[-1]["lr"]), "seconds": round(durations[-1], 3),
                    "images_per_s": round(seen / max(durations[-1], 1e-9), 2), "best": improved,
                })  # fmt: skip
                stopped = bool(recipe.patience) and epoch - int(best["epoch"]) >= int(recipe.patience or 0)
                stopped = broadcast_flag(self.dist, stopped)
                if main:
                    if improved:
                        ckpt.save_atomic(
                            {
                                "format": ckpt.FORMAT,
                                "epoch": epoch,
                                "score": score,
                                "model": self.model.trainable_state(),
                            },
                            self.run_dir / ckpt.BEST,
                        )
                    ckpt.save_atomic(self._state(epoch, best, history, stopped), self.run_dir / ckpt.LAST)
                    write_log(self.run_dir, history)
                    if stopped:
                        self.log(
                            f"early stop after epoch {epoch}: no better validation {self.primary} for {recipe.patience} epochs"
                        )
                barrier(self.dist)
        except torch.cuda.OutOfMemoryError:
            raise FinetuneError(
                f"CUDA out of memory at batch size {recipe.batch_size} ({self.config['backbone']}, {recipe.setting}, "
                f"{self.config['resolution']}px). Lower --batch-size, add --grad-checkpointing (trains the backbone "
                "with less memory), or lower --resolution. Progress up to the last finished epoch is kept."
            ) from None
        return Outcome(history, int(best["epoch"]), float(best["score"]), stopped, start, time.perf_counter() - started)


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f}s"
    return f"{seconds / 60:.0f}min" if seconds < 7200 else f"{seconds / 3600:.1f}h"

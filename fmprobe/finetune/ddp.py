"""Multi-process training through ``torchrun`` (DistributedDataParallel), nothing home-made.

``torchrun --nproc-per-node N -m fmprobe finetune ...`` (or ``python -m torch.distributed.run``) sets RANK,
WORLD_SIZE and LOCAL_RANK; :func:`setup` then joins the process group (NCCL on CUDA, gloo on CPU). Each global
batch is split over the ranks (see ``data.train_plan``) and the loss is normalised by the *global* batch size, so
gradients, and with them the training, equal a one-process run with the same ``--batch-size``. Validation and
test rows are sharded too and gathered on every rank, so all ranks take the same best-epoch decision; rank 0 alone
writes checkpoints, logs and result rows.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist

from fmprobe.runtime import choose_device


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup(device: str = "auto") -> Dist:
    """Join the torchrun process group if this process was started by torchrun; pick this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(device=choose_device(device))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    torch_device = choose_device(device, local_rank)
    owns = False
    if not dist.is_initialized():
        backend = "nccl" if torch_device.type == "cuda" else "gloo"
        if torch_device.type == "cuda":
            torch.cuda.set_device(torch_device)
        dist.init_process_group(backend, timeout=timedelta(minutes=60))
        owns = True
    if torch_device.type == "cpu":
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    return Dist(rank, world, local_rank, torch_device, owns)


def teardown(info: Dist) -> None:
    if info.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: Dist) -> None:
    if info.enabled:
        dist.barrier()


def gather_rows(info: Dist, *arrays: np.ndarray) -> list[np.ndarray]:
    """Concatenate each rank's contiguous shard, in rank order (so rows come back in the split's order)."""
    if not info.enabled:
        return list(arrays)
    parts: list[object] = [None] * info.world
    dist.all_gather_object(parts, list(arrays))
    return [np.concatenate([p[i] for p in parts], axis=0) for i in range(len(arrays))]  # type: ignore[index]


def all_reduce_sum(info: Dist, values: list[float]) -> list[float]:
    if not info.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=info.device)
    dist.all_reduce(t)
    return t.tolist()


def broadcast_flag(info: Dist, flag: bool) -> bool:
    """Rank 0's decision for everyone (e.g. early stopping)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int64, device=info.device)
    dist.broadcast(t, 0)
    return bool(t.item())

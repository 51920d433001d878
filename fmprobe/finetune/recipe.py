"""The training recipe: what a finetune run trains and how (the study's defaults), as one frozen record.

Settings: ``linear`` (frozen backbone, linear head), ``attention`` (frozen backbone, attention-pooling head over
the patch tokens), ``partial:K`` (the top K blocks and everything after them unfrozen), ``full`` (everything).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass

from fmprobe.errors import FmprobeError

SETTINGS = ("linear", "attention", "partial:K", "full")
SCHEDULES = ("constant", "cosine")
BALANCE = ("none", "loss", "sampler")
HEADS = ("small", "deit")


class FinetuneError(FmprobeError):
    """A finetune run that cannot start or go on (bad setting, unsupported architecture, out of memory)."""


def parse_setting(setting: str) -> tuple[str, int]:
    """``'partial:3'`` -> ``('partial', 3)``; ``'full'`` -> ``('full', 0)``; anything else names the choices."""
    text = setting.strip().lower().removeprefix("finetune:")
    match = re.fullmatch(r"partial:(\d+)", text)
    if match:
        k = int(match.group(1))
        if k < 1:
            raise FinetuneError(f"--setting {setting!r}: K must be at least 1 (partial:0 is the 'linear' setting).")
        return "partial", k
    if text in ("linear", "attention", "full"):
        return text, 0
    raise FinetuneError(
        f"unknown --setting {setting!r}; use linear, attention, partial:K (top K blocks unfrozen, e.g. partial:2) or full."
    )


@dataclass(frozen=True)
class Recipe:
    """Hyper-parameters of one run. Defaults are the study's: AdamW, lr 1e-4, weight decay 1e-5, batch 64, up to
    100 epochs with 5 epochs of linear warm-up (then constant), gradient clipping at 1.0."""

    setting: str = "linear"
    epochs: int = 100
    lr: float = 1e-4
    weight_decay: float = 1e-5
    batch_size: int = 64
    warmup_epochs: int = 5
    schedule: str = "constant"  # after warm-up: constant (the study) or cosine decay to 0
    grad_clip: float = 1.0
    layer_decay: float | None = None  # ViT-style layer-wise lr decay (block i gets lr * decay**(depth - i))
    patience: int | None = None  # early stopping: epochs without a better validation score
    balance: str = "none"  # class balance: none, loss (weights n/(C*n_c)) or sampler (balanced draws)
    grad_checkpointing: bool = False
    head: str = "small"  # attention setting: small random attention pool, or deit (a DeiT-B block behind Linear+LN)

    def __post_init__(self) -> None:
        kind, k = parse_setting(self.setting)
        object.__setattr__(self, "setting", f"partial:{k}" if kind == "partial" else kind)
        checks = [
            (self.epochs >= 1, f"--epochs {self.epochs}: must be at least 1."),
            (self.lr > 0, f"--lr {self.lr}: must be positive."),
            (self.weight_decay >= 0, f"--weight-decay {self.weight_decay}: must be >= 0."),
            (self.batch_size >= 1, f"--batch-size {self.batch_size}: must be at least 1."),
            (self.warmup_epochs >= 0, f"--warmup-epochs {self.warmup_epochs}: must be >= 0."),
            (self.schedule in SCHEDULES, f"--schedule {self.schedule!r}: use {' or '.join(SCHEDULES)}."),
            (self.grad_clip >= 0, f"--grad-clip {self.grad_clip}: must be >= 0 (0 turns clipping off)."),
            (
                self.layer_decay is None or 0 < self.layer_decay <= 1,
                f"--layer-decay {self.layer_decay}: must be in (0, 1].",
            ),
            (self.patience is None or self.patience >= 1, f"--patience {self.patience}: must be at least 1."),
            (self.balance in BALANCE, f"--balance {self.balance!r}: use one of {', '.join(BALANCE)}."),
            (self.head in HEADS, f"--head {self.head!r}: use one of {', '.join(HEADS)}."),
        ]
        for ok, message in checks:
            if not ok:
                raise FinetuneError(message)

    @property
    def kind(self) -> str:
        return parse_setting(self.setting)[0]

    @property
    def top_blocks(self) -> int:
        return parse_setting(self.setting)[1]

    @property
    def trains_backbone(self) -> bool:
        return self.kind in ("partial", "full")

    @property
    def probe_name(self) -> str:
        """The results table's ``probe`` column: ``finetune:<setting>`` (``finetune:attention-deit`` for that head)."""
        suffix = "-deit" if self.kind == "attention" and self.head == "deit" else ""
        return f"finetune:{self.setting}{suffix}"

    def warmup_steps(self, steps_per_epoch: int) -> int:
        """Warm-up length; at most half the run, so short runs still train at the full learning rate."""
        return min(self.warmup_epochs, self.epochs // 2) * steps_per_epoch

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str) -> float:
    """Multiplier of the base learning rate at optimizer step ``step`` (0-based): linear warm-up, then constant or
    cosine decay. A plain function of the step, so a resumed run continues on exactly the same curve."""
    import math

    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "cosine":
        span = max(total_steps - warmup_steps, 1)
        progress = min(max(step - warmup_steps, 0) / span, 1.0)
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0

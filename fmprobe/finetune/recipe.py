"""The training recipe: what a finetune run trains and how (the study's defaults), as one frozen record.

Settings: ``linear`` (frozen backbone, linear head), ``attention`` (frozen backbone, attention-pooling head over
the patch tokens), ``partial:K`` (the top K blocks and everything after them unfrozen), ``full`` (everything).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, fields
from enum import Enum, StrEnum

from fmprobe.errors import FmprobeError


class Setting(StrEnum):
    """What trains (``partial`` is written ``partial:K``: the top K blocks and everything after them)."""

    linear = "linear"
    attention = "attention"
    partial = "partial:K"
    full = "full"


class Schedule(StrEnum):
    """The learning rate after warm-up (:attr:`Recipe.schedule`; a plain string is accepted too).

    Attributes
    ----------
    constant
        Constant after warm-up (the study's).
    cosine
        Cosine decay to 0.

    Examples
    --------
    >>> from fmprobe import Schedule
    >>> Schedule("cosine") is Schedule.cosine
    True
    """

    constant = "constant"  # the study's
    cosine = "cosine"  # cosine decay to 0


class Balance(StrEnum):
    """How a run counters class imbalance (:attr:`Recipe.balance`; a plain string is accepted too).

    Attributes
    ----------
    none
        Nothing (the study's).
    loss
        Class weights n/(C*n_c) in the loss.
    sampler
        Balanced draws with replacement.

    Examples
    --------
    >>> from fmprobe import Balance
    >>> [b.value for b in Balance]
    ['none', 'loss', 'sampler']
    """

    none = "none"
    loss = "loss"
    sampler = "sampler"


class Head(StrEnum):
    """The ``attention`` setting's head (:attr:`Recipe.head`; a plain string is accepted too).

    Attributes
    ----------
    small
        A small random attention pool (the study's).
    deit
        A DeiT-B block behind Linear+LN (its published weights, or ``RunOptions.head_weights``).

    Examples
    --------
    >>> from fmprobe import Head
    >>> Head("deit").value
    'deit'
    """

    small = "small"
    deit = "deit"


SETTINGS = tuple(s.value for s in Setting)
SCHEDULES = tuple(s.value for s in Schedule)
BALANCE = tuple(b.value for b in Balance)
HEADS = tuple(h.value for h in Head)


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
    if text in (Setting.linear, Setting.attention, Setting.full):
        return text, 0
    raise FinetuneError(
        f"unknown --setting {setting!r}; use linear, attention, partial:K (top K blocks unfrozen, e.g. partial:2) or full."
    )


@dataclass(frozen=True)
class Recipe:
    """Hyper-parameters of one fine-tuning run: what trains and how.

    The fields' defaults are the study's (and the only copy of them: the CLI and the study runner read them from
    here). Choice fields take the enum or its plain string. Every field is checked on construction, so a bad value
    fails before torch loads.

    Attributes
    ----------
    setting : str
        ``linear``, ``attention``, ``partial:K`` (the top K blocks and everything after them unfrozen) or ``full``.
    epochs : int
        Training epochs (at least 1).
    lr : float
        Base learning rate.
    weight_decay : float
        AdamW weight decay.
    batch_size : int
        Images per optimizer step (over all processes).
    warmup_epochs : int
        Linear warm-up length (at most half the run).
    schedule : Schedule
        The learning rate after warm-up.
    grad_clip : float
        Gradient-norm clip (0: off).
    layer_decay : float or None
        ViT-style layer-wise lr decay in (0, 1] (block i gets lr * decay**(depth - i)); None: off.
    patience : int or None
        Early stopping after this many epochs without a better validation score; None: off.
    balance : Balance
        Class balance: none, loss weights or a balanced sampler.
    grad_checkpointing : bool
        Recompute activations in the backward pass (less memory, slower).
    head : Head
        The ``attention`` setting's head.

    Raises
    ------
    fmprobe.finetune.FinetuneError
        A field outside its range or an unknown choice (the message names the option and its valid values).

    Examples
    --------
    >>> from fmprobe import Recipe
    >>> recipe = Recipe(setting="partial:2", epochs=20, schedule="cosine")
    >>> recipe.setting, recipe.schedule.value, recipe.probe_name
    ('partial:2', 'cosine', 'finetune:partial:2')
    >>> Recipe.defaults()["epochs"]
    100
    """

    setting: str = "linear"
    epochs: int = 100
    lr: float = 1e-4
    weight_decay: float = 1e-5
    batch_size: int = 64
    warmup_epochs: int = 5
    schedule: Schedule = Schedule.constant
    grad_clip: float = 1.0
    layer_decay: float | None = None  # ViT-style layer-wise lr decay (block i gets lr * decay**(depth - i))
    patience: int | None = None  # early stopping: epochs without a better validation score
    balance: Balance = Balance.none
    grad_checkpointing: bool = False
    head: Head = Head.small

    def __post_init__(self) -> None:
        kind, k = parse_setting(self.setting)
        object.__setattr__(self, "setting", f"partial:{k}" if kind == "partial" else kind)
        self._check_choices()
        checks = [
            (self.epochs >= 1, f"--epochs {self.epochs}: must be at least 1."),
            (self.lr > 0, f"--lr {self.lr}: must be positive."),
            (self.weight_decay >= 0, f"--weight-decay {self.weight_decay}: must be >= 0."),
            (self.batch_size >= 1, f"--batch-size {self.batch_size}: must be at least 1."),
            (self.warmup_epochs >= 0, f"--warmup-epochs {self.warmup_epochs}: must be >= 0."),
            (self.grad_clip >= 0, f"--grad-clip {self.grad_clip}: must be >= 0 (0 turns clipping off)."),
            (
                self.layer_decay is None or 0 < self.layer_decay <= 1,
                f"--layer-decay {self.layer_decay}: must be in (0, 1].",
            ),
            (self.patience is None or self.patience >= 1, f"--patience {self.patience}: must be at least 1."),
        ]
        for ok, message in checks:
            if not ok:
                raise FinetuneError(message)

    def _check_choices(self) -> None:
        """Plain strings become the enum members (``Schedule('cosine')``); anything else names the choices."""
        for name, choices in (("schedule", Schedule), ("balance", Balance), ("head", Head)):
            value = getattr(self, name)
            try:
                object.__setattr__(self, name, choices(value))
            except ValueError:
                names = [c.value for c in choices]
                joined = " or ".join(names) if len(names) == 2 else "one of " + ", ".join(names)
                raise FinetuneError(f"--{name} {value!r}: use {joined}.") from None

    @classmethod
    def defaults(cls) -> dict[str, object]:
        """Field name -> default (plain values): what ``--help`` shows."""
        return {f.name: _plain(f.default) for f in fields(cls)}

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
        suffix = "-deit" if self.kind == "attention" and self.head is Head.deit else ""
        return f"finetune:{self.setting}{suffix}"

    def warmup_steps(self, steps_per_epoch: int) -> int:
        """Warm-up length; at most half the run, so short runs still train at the full learning rate."""
        return min(self.warmup_epochs, self.epochs // 2) * steps_per_epoch

    def to_dict(self) -> dict[str, object]:
        """Plain values (enum members as their strings): part of the run key, and the rows' ``params``."""
        return {k: _plain(v) for k, v in asdict(self).items()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


def _plain(value: object) -> object:
    return value.value if isinstance(value, Enum) else value


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

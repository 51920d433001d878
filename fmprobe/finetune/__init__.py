"""Trained settings next to the frozen probes: ``linear``, ``attention``, ``partial:K`` and ``full``.

``run_finetune(dataset, backbone, Recipe(...), RunOptions(...))`` trains one setting of one backbone on one dataset
(resumable, deterministic on CPU, multi-process under torchrun) and writes the same result rows as
``fmprobe probe``; ``plot_training_curves`` draws a run's log.

The records (:class:`Recipe`, :class:`RunOptions` and their choice enums) import without torch, so the CLI and the
study runner check options before the heavy stack loads; the training code is imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fmprobe._io import lazy_attributes, lazy_dir
from fmprobe.finetune.options import ComputeDtype, Device, RunOptions, recipe_and_options
from fmprobe.finetune.recipe import SETTINGS, Balance, FinetuneError, Head, Recipe, Schedule, Setting, parse_setting

_LAZY = {
    "FinetunePlan": "fmprobe.finetune.api",
    "FinetuneResult": "fmprobe.finetune.api",
    "plan_finetune": "fmprobe.finetune.api",
    "run_finetune": "fmprobe.finetune.api",
    "plot_training_curves": "fmprobe.finetune.plot",
}

if TYPE_CHECKING:  # pragma: no cover
    from fmprobe.finetune.api import FinetunePlan, FinetuneResult, plan_finetune, run_finetune
    from fmprobe.finetune.plot import plot_training_curves


__getattr__ = lazy_attributes(__name__, _LAZY)
__dir__ = lazy_dir(__name__, _LAZY)


__all__ = [
    "SETTINGS",
    "Balance",
    "ComputeDtype",
    "Device",
    "FinetuneError",
    "FinetunePlan",
    "FinetuneResult",
    "Head",
    "Recipe",
    "RunOptions",
    "Schedule",
    "Setting",
    "parse_setting",
    "plan_finetune",
    "plot_training_curves",
    "recipe_and_options",
    "run_finetune",
]

"""Trained settings next to the frozen probes: ``linear``, ``attention``, ``partial:K`` and ``full``.

``run_finetune`` trains one setting of one backbone on one dataset (resumable, deterministic on CPU, multi-process
under torchrun) and writes the same result rows as ``fmprobe probe``; ``plot_training_curves`` draws a run's log.
"""

from __future__ import annotations

from fmprobe.finetune.api import FinetuneResult, run_finetune
from fmprobe.finetune.plot import plot_training_curves
from fmprobe.finetune.recipe import SETTINGS, FinetuneError, Recipe, parse_setting

__all__ = [
    "SETTINGS",
    "FinetuneError",
    "FinetuneResult",
    "Recipe",
    "parse_setting",
    "plot_training_curves",
    "run_finetune",
]

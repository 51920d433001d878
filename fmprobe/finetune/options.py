"""How a fine-tuning run runs (where, on what, how fast, what it writes), as opposed to what it trains (the
:class:`~fmprobe.finetune.recipe.Recipe`). Torch-free, so a study file is checked before torch is imported.

Only the fields that change the trained model (resolution, seed, weights, head weights, compute dtype) enter the
run key; the rest (device, workers, progress, force, output folder) are mechanics.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import Enum
from pathlib import Path
from typing import Any

from fmprobe._io import accepts_renamed, renamed
from fmprobe.finetune.recipe import FinetuneError, Recipe
from fmprobe.metrics import N_BOOTSTRAP
from fmprobe.runtime import ComputeDtype, Device, check_device_name

# RunOptions' (and run_finetune's) deprecated keyword names (old -> new): the names now match --max-images and
# --bootstrap.
RUN_RENAMED = {"max_images_per_split": "max_images", "n_resamples": "n_bootstrap"}


@accepts_renamed(RUN_RENAMED)
@dataclass(frozen=True)
class RunOptions:
    """How one fine-tuning run runs (where, on what, how fast, what it writes), as opposed to its :class:`Recipe`.

    The defaults are the library's (the CLI shows them in ``--help``). Only ``resolution``, ``seed``, ``weights``,
    ``head_weights`` and ``dtype`` change the trained model and enter the run key; the rest are mechanics.

    Attributes
    ----------
    out : Path
        Output folder: rows go to ``out/results``, checkpoints and logs to ``out/finetune``.
    resolution : int or None
        Input size in pixels; None: the backbone's native size.
    weights : str or Path or None
        A local backbone checkpoint instead of the published one.
    head_weights : str or Path or None
        DeiT-B checkpoint for the ``deit`` head (default: the published one).
    device : Device or str
        ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
    dtype : ComputeDtype
        The compute dtype (``auto`` picks per device).
    seed : int
        Seeds the head, data order, augmentation and dropout.
    workers : int or None
        Image-loading processes; None: ``fmprobe._io.default_workers()``.
    max_images : int or None
        A seeded subset of at most this many images per split (``--max-images``): a quick look.
    n_bootstrap : int
        Bootstrap resamples per confidence interval (``--bootstrap``).
    force : bool
        Redo a finished run (its run folder is deleted first).
    progress : bool
        Show progress bars; the inverse of the CLI's ``--quiet``.

    Raises
    ------
    fmprobe.finetune.FinetuneError
        An unknown dtype or device, or a negative ``workers`` or ``n_bootstrap``.

    Examples
    --------
    >>> from fmprobe import RunOptions
    >>> options = RunOptions(out="runs", device="cpu", seed=1)
    >>> options.out, options.device.value
    (PosixPath('runs'), 'cpu')
    """

    out: Path = Path("runs")  # rows go to out/results, checkpoints and logs to out/finetune
    resolution: int | None = None  # input size in pixels; None: the backbone's native size
    weights: str | Path | None = None  # a local backbone checkpoint instead of the published one
    head_weights: str | Path | None = None  # DeiT-B checkpoint for the deit head (default: the published one)
    device: Device | str = Device.auto
    dtype: ComputeDtype = ComputeDtype.auto
    seed: int = 0  # seeds the head, data order, augmentation and dropout
    workers: int | None = None  # image-loading processes; None: fmprobe._io.default_workers()
    max_images: int | None = None  # a seeded subset (a quick look)
    n_bootstrap: int = N_BOOTSTRAP  # bootstrap resamples per confidence interval
    force: bool = False  # redo a finished run (its run folder is deleted first)
    progress: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "out", Path(self.out))
        try:
            object.__setattr__(self, "dtype", ComputeDtype(self.dtype))
        except ValueError:
            raise FinetuneError(
                f"--dtype {self.dtype!r}: use one of {', '.join(d.value for d in ComputeDtype)}."
            ) from None
        device = check_device_name(self.device)  # auto, cpu, cuda or cuda:N; anything else is refused here
        object.__setattr__(self, "device", Device(device) if device in {d.value for d in Device} else device)
        checks = [
            (self.workers is None or self.workers >= 0, f"--workers {self.workers}: must be >= 0."),
            (self.n_bootstrap >= 0, f"--bootstrap {self.n_bootstrap}: must be >= 0."),
        ]
        for ok, message in checks:
            if not ok:
                raise FinetuneError(message)

    @classmethod
    def defaults(cls) -> dict[str, object]:
        """Field name -> default (plain values): what ``--help`` shows."""
        return {f.name: f.default.value if isinstance(f.default, Enum) else f.default for f in fields(cls)}


def recipe_and_options(keywords: dict[str, Any]) -> tuple[Recipe, RunOptions]:
    """Split flat keywords (a study's ``[finetune]`` table plus the grid cell's values) into the two records,
    by their field names; an unknown key names the allowed ones."""
    keywords = renamed(keywords, RUN_RENAMED, "run_finetune", stacklevel=4)
    recipe_keys = {f.name for f in fields(Recipe)}
    option_keys = {f.name for f in fields(RunOptions)}
    unknown = sorted(set(keywords) - recipe_keys - option_keys)
    if unknown:
        raise FinetuneError(
            f"unknown fine-tuning key(s) {unknown}; allowed: {', '.join(sorted(recipe_keys | option_keys))}."
        )
    recipe = Recipe(**{k: v for k, v in keywords.items() if k in recipe_keys})
    options = RunOptions(**{k: v for k, v in keywords.items() if k in option_keys})
    return recipe, options

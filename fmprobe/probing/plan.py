"""Planning `fmprobe probe`: the cells a :class:`~fmprobe.probing.grid.ProbeGrid` gives over feature files, and
which of them a results folder does not hold yet. Reads headers and the results table only; fits nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fmprobe.errors import FmprobeError
from fmprobe.metrics.subgroups import BAND_SUFFIX, available
from fmprobe.probing.grid import ProbeGrid, ValSubsample, cell_repeats
from fmprobe.probing.sampling import shot_capacity
from fmprobe.results import CellInfo, done_cells, read_results
from fmprobe.sharding import WHOLE, Part, as_part, dealt
from fmprobe.store import FeatureFile
from fmprobe.tasks import GROUP, TEST, TRAIN


@dataclass(frozen=True)
class ProbeCell:
    """One cell to run: which feature file, and the cell's identity (readout, probe, fraction, repeat, seed)."""

    features: FeatureFile
    info: CellInfo


@dataclass(frozen=True)
class ProbePlan:
    """The cells :func:`run_probing` will fit, and how many of the grid's cells are already in ``results_dir``."""

    results_dir: Path
    grid: ProbeGrid
    cells: tuple[ProbeCell, ...]
    skipped: int
    rescore: tuple[ProbeCell, ...] = ()  # finished cells without the grid's subgroup rows: sliced from predictions
    part: Part = WHOLE  # the shard whose cells these are (``--shard I/N``)


def find_feature_files(paths: str | Path | Iterable[str | Path]) -> list[Path]:
    """Feature files named directly, or all ``*.h5`` below the folders given (sorted, no duplicates). One path
    (a string or a Path) counts as one, never as the characters of its name."""
    paths = [paths] if isinstance(paths, str | Path) else list(paths)
    found: list[Path] = []
    for item in paths:
        path = Path(item)
        if path.is_dir():
            found.extend(sorted(path.rglob("*.h5")))
        elif path.exists():
            found.append(path)
        else:
            raise FmprobeError(f"{path}: no such feature file or folder. `fmprobe extract` prints the paths it writes.")
    unique = list(dict.fromkeys(p.resolve() for p in found))
    if not unique:
        raise FmprobeError(f"no feature files (*.h5) in {', '.join(map(str, paths))}; run `fmprobe extract` first.")
    return unique


def amount_label(info: CellInfo) -> str:
    """How much training data a cell uses, for messages: ``fraction 0.1`` or ``4 shots``."""
    return f"{info.shots} shots" if info.shots else f"fraction {info.train_fraction:g}"


def _weights_label(features: FeatureFile) -> str:
    return str(features.attrs.get("weights_label", "random" if features.backbone.endswith(":random") else "pretrained"))


def _imagenet_baseline(features: FeatureFile) -> bool:
    """Whether the extraction's backbone entry is registered as an ImageNet baseline (feature files written before
    the attribute existed say nothing: False, and the report then asks for ``--baseline``)."""
    return bool(features.attrs.get("imagenet_baseline", False))


def _readouts(features: FeatureFile, wanted: Sequence[str]) -> list[str]:
    chosen = list(wanted) or list(features.readouts)
    missing = [r for r in chosen if r not in features.readouts]
    if missing:
        raise FmprobeError(
            f"{features.path}: readout(s) {missing} not extracted; stored: {', '.join(features.readouts)}."
        )
    return chosen


def _cells_of(features: FeatureFile, grid: ProbeGrid) -> list[ProbeCell]:
    """Every cell of one feature file, in run order (readout, probe, fraction then shots, repeat).

    A k-shot cell's ``train_fraction`` is the fraction of the training split it fits on (k x classes / N), so
    the row says how much data it used; its ``shots`` keeps it off every fraction axis."""
    amounts = [(fraction, 0) for fraction in grid.train_fractions]
    amounts += [(fraction, k) for k, fraction in _shot_fractions(features, grid.shots).items()]
    return [
        ProbeCell(
            features,
            CellInfo(
                dataset=features.dataset,
                task=features.task,
                backbone=features.backbone,
                weights=_weights_label(features),
                readout=readout,
                resolution=features.resolution,
                probe=probe,
                train_fraction=fraction,
                repeat=repeat,
                seed=grid.seed,
                fingerprint=features.key,
                imagenet_baseline=_imagenet_baseline(features),
                shots=shots,
                val_subsample=_val_subsample(grid, fraction),
            ),  # fmt: skip
        )
        for readout in _readouts(features, grid.readouts)
        for probe in grid.probes
        for fraction, shots in amounts
        for repeat in range(cell_repeats(probe, fraction, grid.repeats, shots))
    ]


def _val_subsample(grid: ProbeGrid, fraction: float) -> str:
    """The cell's validation protocol when it is not "all of validation" (part of its id, see ``cell_id``)."""
    return str(ValSubsample(grid.val_subsample).value) if fraction < 1 and grid.val_subsample != ValSubsample.full else ""


def _shot_fractions(features: FeatureFile, shots: Sequence[int]) -> dict[int, float]:
    """k -> the fraction of the training split a k-shot cell uses; refuses, before any fit, a task without classes
    (multilabel) and a class with fewer than k images (or patients/lesions, where the split records groups)."""
    if not shots:
        return {}
    if features.task == "multilabel":
        raise FmprobeError(
            f"{features.path}: --shots draws k images per class, and a multilabel task has no classes to draw them "
            "from (an image is positive for several labels). Use --train-fraction for multilabel datasets."
        )
    train = features.load(TRAIN)
    groups = train.metadata.get(GROUP)
    capacity = shot_capacity(train.labels.astype(np.int64), groups, len(features.class_names))
    worst = int(np.argmin(capacity))
    if capacity[worst] < max(shots):
        unit = "different patients/lesions (groups)" if groups is not None else "training images"
        raise FmprobeError(
            f"{features.path}: --shots {max(shots)} needs {max(shots)} {unit} per class, but class "
            f"{features.class_names[worst]!r} has {int(capacity[worst])}. Use --shots up to {int(capacity[worst])}."
        )
    return {k: k * len(features.class_names) / len(train.labels) for k in shots}


def plan_probing(
    features: str | Path | Sequence[str | Path],
    grid: ProbeGrid,
    out: str | Path,
    force: bool = False,
    shard: str | Part | None = None,
) -> ProbePlan:
    """The cells of ``grid`` over the feature files that ``out`` does not hold yet (all of them with ``force``);
    with ``shard="I/N"`` only those dealt to shard I by their cell id (:mod:`fmprobe.sharding`), so N processes
    appending into one ``out`` together run every cell once.

    Reads only the feature files' headers (and test metadata, for subgroups) and the results table; names,
    readouts and subgroup attributes fail here, before any fit. Finished cells that lack a requested subgroup
    attribute's rows are listed in ``rescore``: their saved predictions are sliced, nothing is refitted.
    """
    out, part = Path(out), as_part(shard)
    files = [FeatureFile(path) for path in find_feature_files(features)]
    for file in files:
        check_subgroups(file, grid)
    every = [cell for file in files for cell in _cells_of(file, grid)]
    cells = [cell for cell in every if dealt(cell.info.cell_id, part)]
    finished = set() if force else done_cells(out)
    todo = tuple(c for c in cells if c.info.cell_id not in finished)
    kept = [c for c in cells if c.info.cell_id in finished]
    if not force:
        _refuse_earlier_protocol(out, {c.info.cell_id for c in kept})
    return ProbePlan(out, grid, todo, len(cells) - len(todo), _lacking_subgroups(out, kept, grid), part)


def _lacking_subgroups(out: Path, kept: Sequence[ProbeCell], grid: ProbeGrid) -> tuple[ProbeCell, ...]:
    """The finished cells without a summary row for every requested attribute (each scored cell writes one per
    attribute, missing or not), to be sliced from their saved predictions."""
    if not kept or not grid.subgroups:
        return ()
    rows = read_results(out)
    have = set(zip(rows["cell_id"], rows["subgroup"], strict=True))
    return tuple(c for c in kept if any((c.info.cell_id, a) not in have for a in grid.subgroups))


def check_subgroups(features: FeatureFile, grid: ProbeGrid) -> None:
    """Refuse, before any fit, a requested subgroup attribute that the feature file's test metadata does not hold
    (neither stored nor derivable), naming the file and its stored keys."""
    if not grid.subgroups:
        return
    keys = sorted(features.load(TEST).metadata)
    offered = available(keys, grid.bands)
    for name in grid.subgroups:
        if name not in offered:
            base = name.removesuffix(BAND_SUFFIX)
            hint = (
                f"pass --bands {base}=EDGES to cut it into bands" if base != name and base in keys
                else "extract the features again with an fmprobe whose adapter stores it, or drop it from --subgroups"
            )  # fmt: skip
            raise FmprobeError(
                f"--subgroups {name!r}: not in the test metadata of {features.path} (stored keys: "
                f"{', '.join(keys) or 'none'}; derivable: {', '.join(offered[len(keys):]) or 'none'}); {hint}."
            )


def _refuse_earlier_protocol(out: Path, kept: set[str]) -> None:
    """Refuse to keep cells an fmprobe before the current probing protocol wrote (their rows record no ``n_val``):
    skipped as done, they would sit in one table beside new cells computed another way."""
    if not kept:
        return
    rows = read_results(out)
    earlier = sorted(set(rows.loc[rows["cell_id"].isin(kept) & (rows["n_val"] < 0), "cell_id"]))
    if earlier:
        raise FmprobeError(
            f"{out}: {len(earlier)} of the cells to run were written by an earlier fmprobe (their rows record no "
            "validation size), whose protocol differs: LightGBM's rounds were tuned on validation, ordinal grades "
            "were decoded by argmax, low-label cells were tuned on all of validation. Kept, they would be compared "
            f"with cells computed the new way. Probe into a new --out, or pass --force to redo them in {out}."
        )

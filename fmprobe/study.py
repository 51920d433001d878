"""`fmprobe study FILE.toml`: a grid of datasets x backbones x readouts x resolutions x probes x fractions x repeats.

Extraction first (each backbone once per dataset and resolution, through the cache), then every probe cell, then
the report. Every stage is resumable: finished feature files are cache hits, an interrupted extraction resumes
from its journal, finished probe cells are skipped. ``--dry-run`` prints the grid and its estimated cost only.

Study file (paths are relative to the study file's folder); its keys are the fields of :class:`Study`::

    name = "quick"
    baseline = "efficientnet_lite0_imagenet"      # reference backbone of the headline view
    datasets = ["../../shared/data/pneumoniamnist.npz", "medmnist:breastmnist@64"]
    backbones = ["efficientnet_lite0_imagenet", "efficientnet_lite0_imagenet:random"]
    random_seeds = [0, 1, 2]   # optional: every NAME:random above runs as NAME:random, NAME:random:1, NAME:random:2
    readouts = []              # default: each backbone's own
    resolutions = []           # default: each backbone's native size
    probes = ["logreg", "knn", "lgbm"]
    train_fractions = [1.0]
    shots = []                 # optional: few-shot cells, k labelled images per class (e.g. [1, 2, 4, 8, 16])
    repeats = 1
    seed = 0
    bootstrap = 1000           # optional: resamples per CI (default: the library's)
    val_subsample = "full"     # optional: validation rows of a fraction cell (default: proportional)
    subgroups = ["sex", "age_band"]   # optional: every cell also scored per value of these test-metadata attributes
    subgroup_min_size = 30     # optional: test rows a subgroup needs for a number (default: the library's)
    bands = { age = [40, 60, 80] }    # optional: edges of derived <key>_band attributes (default: the library's)
    [probe_params.lgbm]        # optional: any probe parameter, per probe (as `fmprobe probe --probe-param`)
    n_jobs = 1
    [weights]                  # offline checkpoints, per backbone name
    dinov2_vitb14 = "weights/dinov2_vitb14_pretrain.pth"
    [extract]                  # any fmprobe.extract_features keyword
    batch_size = 64
    [finetune]                 # optional: trained settings next to the probes (same rows, same report)
    settings = ["linear", "full"]   # linear, attention, partial:K, full
    epochs = 10                # any other field of fmprobe.finetune.Recipe (lr, batch_size, patience, ...)
    workers = 0                # and run options (device, dtype, workers, head_weights, force)
"""

from __future__ import annotations

import contextlib
import logging
import os
import tomllib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, fields, replace
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fmprobe._io import atomic_write_text, renamed
from fmprobe.checks import check_backbone, check_probes
from fmprobe.datasets import SOURCES, load_dataset, parse_spec
from fmprobe.errors import FmprobeError
from fmprobe.finetune import Recipe, RunOptions, parse_setting
from fmprobe.finetune.options import RUN_RENAMED
from fmprobe.metrics.subgroups import check_edges
from fmprobe.preflight import Missing, check_datasets, check_weights
from fmprobe.probing import DEFAULT_PROBES, ValSubsample, cell_repeats
from fmprobe.probing.grid import parse_probe_params
from fmprobe.registry import closest
from fmprobe.runtime import EXTRACT_RENAMED, ExtractOptions
from fmprobe.sharding import WHOLE, Part, as_part, dealt

if TYPE_CHECKING:  # pragma: no cover
    from fmprobe.report import ReportPaths

# Loading and checking a study file is light (no torch): the backbones, extraction, fine-tuning, probing and report
# stacks are imported where a study runs them.

log = logging.getLogger(__name__)

def _path_sources() -> set[str]:
    """Dataset sources whose argument is a path (made relative to the study file), from the dataset registry."""
    return {name for name, source in SOURCES.items() if source.takes_path}


# run_finetune keywords the study sets itself from its own keys (datasets, backbones, resolutions, seed, out, ...).
_STUDY_SETS = frozenset({"setting", "weights", "resolution", "seed", "out", "max_images", "progress"})


def _run_option_names() -> tuple[str, ...]:
    """Run options a [finetune] table may set (how a run executes, not what it trains)."""
    return tuple(f.name for f in fields(RunOptions) if f.name not in _STUDY_SETS)


def _recipe_names() -> tuple[str, ...]:
    return tuple(f.name for f in fields(Recipe) if f.name != "setting")  # 'settings' lists them instead


@dataclass(frozen=True)
class FinetuneGrid:
    """The ``[finetune]`` table: the settings to train and the keywords every run shares, in the file's order."""

    settings: tuple[str, ...] = ()
    keywords: dict[str, object] = field(default_factory=dict)  # Recipe fields and run options

    @property
    def recipe(self) -> dict[str, object]:
        """The keywords that are fields of :class:`fmprobe.finetune.Recipe`."""
        return {k: v for k, v in self.keywords.items() if k in _recipe_names()}

    @property
    def options(self) -> dict[str, object]:
        """The keywords that are run options (device, workers, ...)."""
        return {k: v for k, v in self.keywords.items() if k not in _recipe_names()}


@dataclass(frozen=True)
class Study:
    """A study file, validated. Every field but ``path`` is a key of the file."""

    name: str
    path: Path
    datasets: tuple[str, ...]
    backbones: tuple[str, ...]
    readouts: tuple[str, ...] = ()
    resolutions: tuple[int, ...] = ()
    probes: tuple[str, ...] = DEFAULT_PROBES
    train_fractions: tuple[float, ...] = (1.0,)
    shots: tuple[int, ...] = ()
    repeats: int = 1
    seed: int = 0
    baseline: str | None = None
    weights: dict[str, str] = field(default_factory=dict)
    extract: dict[str, object] = field(default_factory=dict)  # fmprobe.extract_features keywords
    out: Path = Path("runs")
    bootstrap: int | None = None  # resamples per CI; None: the library's default
    val_subsample: str | None = None  # fmprobe.probing.ValSubsample; None: the library's default
    probe_params: dict[str, dict[str, object]] = field(default_factory=dict)  # probe name -> its keyword arguments
    finetune: FinetuneGrid = field(default_factory=FinetuneGrid)
    random_seeds: tuple[int, ...] = ()  # initialisations of every NAME:random control; (): NAME:random alone (seed 0)
    subgroups: tuple[str, ...] = ()  # test-metadata attributes every cell is also scored per value of
    subgroup_min_size: int | None = None  # None: the library's default
    bands: dict[str, tuple[float, ...]] = field(default_factory=dict)  # derived <key>_band edges; {}: the library's

    def __post_init__(self) -> None:
        object.__setattr__(self, "backbones", expand_random_seeds(self.backbones, self.random_seeds))

    def finetune_jobs(self) -> list[tuple[str, str, int | None, str]]:
        """(dataset, backbone, resolution, setting) per finetune run, in the order they run."""
        return [(d, b, r, s) for d in self.datasets for b in self.backbones for r in self.resolutions or (None,)
                for s in self.finetune.settings]  # fmt: skip

    def extraction_jobs(self) -> list[tuple[str, str, int | None, tuple[str, ...]]]:
        """(dataset, backbone, resolution, readouts) per feature file, in the order they run."""
        from fmprobe.backbones import get_spec, parse_name

        jobs = []
        for dataset in self.datasets:
            for backbone in self.backbones:
                spec = get_spec(parse_name(backbone)[0])
                readouts = tuple(r for r in self.readouts if spec.supports(r)) or (spec.default_readout,)
                for resolution in self.resolutions or (None,):
                    jobs.append((dataset, backbone, resolution, readouts))
        return jobs

    def probe_cells(self) -> int:
        per_file = sum(cell_repeats(p, f, self.repeats) for p in self.probes for f in self.train_fractions)
        per_file += len(self.probes) * len(self.shots) * self.repeats
        return sum(len(readouts) for *_, readouts in self.extraction_jobs()) * per_file

    def bootstrap_keywords(self) -> dict[str, int]:
        """``n_bootstrap`` for the probes and finetune runs when the file sets it (else their own default)."""
        return {} if self.bootstrap is None else {"n_bootstrap": self.bootstrap}


def expand_random_seeds(backbones: Iterable[str], seeds: Iterable[int]) -> tuple[str, ...]:
    """Every ``NAME:random`` (no seed written) as one control per seed, ``NAME:random`` for seed 0 (its cache
    and rows as before) and ``NAME:random:SEED`` for the others; names that write a seed are kept as they are."""
    seeds = tuple(seeds)
    if not seeds:  # nothing to expand (and no need to load the backbone registry)
        return tuple(dict.fromkeys(backbones))
    from fmprobe.backbones import parse_backbone

    if any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
        raise FmprobeError(f"random_seeds {list(seeds)}: list non-negative integers, e.g. random_seeds = [0, 1, 2].")
    out: list[str] = []
    for name in backbones:
        parsed = parse_backbone(name)
        if parsed.random_init and parsed.seed is None and seeds:
            out += [parse_backbone(f"{parsed.base}:random:{s}").canonical for s in seeds]
        else:
            out.append(name)
    return tuple(dict.fromkeys(out))


# ------------------------------------------------------------------------------------------------ loading


def _study_keys() -> list[str]:
    return [f.name for f in fields(Study) if f.name != "path"]


def _refuse_unknown(table: dict[str, Any], valid: Iterable[str], path: Path, where: str = "") -> None:
    """Unknown keys fail with the closest valid key for each (a typo costs a second, not a silently ignored key)."""
    valid = sorted(valid)
    unknown = sorted(set(table) - set(valid))
    if not unknown:
        return
    hints = [f"{k!r} -> {near[0]!r}" for k in unknown if (near := closest(k, valid, n=1))]
    raise FmprobeError(
        f"{path}: unknown key(s) {unknown}{where}" + (f"; closest: {', '.join(hints)}" if hints else "")
        + f". Allowed: {', '.join(valid)}."
    )  # fmt: skip


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise FmprobeError(f"study file {path} not found; `ls studies/` shows the shipped ones.") from None
    except tomllib.TOMLDecodeError as err:
        raise FmprobeError(f"{path}: not valid TOML ({err}).") from None


def _resolve_dataset(spec: str, base: Path) -> str:
    """Make a relative path inside a dataset spec relative to the study file, not to the working directory."""
    source, argument, _ = parse_spec(spec)
    body, sep, query = spec.partition("?")
    if source in _path_sources() and argument and not Path(argument).is_absolute():
        absolute = str((base / argument).resolve())
        body = f"{source}:{absolute}" if body.startswith(f"{source}:") else absolute
    return body + (sep + query if sep else "")


def load_study(path: str | Path, out: str | Path | None = None) -> Study:
    """Read and validate a study file, with errors naming the file and the key.

    Everything a study will need is checked here, before torch loads: unknown keys (with the closest valid one),
    backbone and probe names, probe parameters, the ``[extract]`` and ``[finetune]`` tables. Relative paths are
    made relative to the study file's folder.

    Parameters
    ----------
    path : str or Path
        The study file (TOML); the format is in this module's docstring and ``fmprobe study --init`` writes one.
    out : str or Path or None, optional
        The output folder (default: the file's ``out``, else ``runs/<name>``).

    Returns
    -------
    Study
        The validated study.

    Raises
    ------
    fmprobe.errors.FmprobeError
        A missing file, invalid TOML, an unknown key or name, or a bad value (the message names the key).

    Examples
    --------
    >>> from fmprobe import init_study, load_study
    >>> study = load_study(init_study("my_study.toml"))
    >>> study.name, study.out  # the template names itself
    ('my-study', PosixPath('runs/my-study'))
    """
    path = Path(path)
    data = _read_toml(path)
    _refuse_unknown(data, _study_keys(), path)
    for key in ("datasets", "backbones"):
        if not data.get(key):
            raise FmprobeError(f"{path}: '{key}' must list at least one entry.")

    def as_tuple(key: str, kind: type) -> tuple:
        value = data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, kind) for v in value):
            raise FmprobeError(f"{path}: '{key}' must be a list of {kind.__name__}.")
        return tuple(value)

    base, name = path.parent, str(data.get("name", path.stem))
    if out is None:
        out = os.path.normpath(base / data["out"]) if "out" in data else Path("runs") / name
    study = Study(
        name=name,
        path=path,
        datasets=tuple(_resolve_dataset(d, base) for d in as_tuple("datasets", str)),
        backbones=as_tuple("backbones", str),
        readouts=as_tuple("readouts", str),
        resolutions=as_tuple("resolutions", int),
        probes=as_tuple("probes", str) or DEFAULT_PROBES,
        train_fractions=tuple(float(f) for f in data.get("train_fractions", [1.0])),
        shots=as_tuple("shots", int),
        repeats=int(data.get("repeats", 1)),
        seed=int(data.get("seed", 0)),
        baseline=data.get("baseline"),
        weights={k: str((base / v).resolve()) for k, v in data.get("weights", {}).items()},
        extract=_extract_table(data.get("extract", {}), path),
        out=Path(out),
        bootstrap=int(data["bootstrap"]) if "bootstrap" in data else None,
        val_subsample=data.get("val_subsample"),
        probe_params=parse_probe_params(data.get("probe_params", {})),
        finetune=_finetune_grid(data.get("finetune", {}), path),
        random_seeds=as_tuple("random_seeds", int),
        subgroups=as_tuple("subgroups", str),
        subgroup_min_size=int(data["subgroup_min_size"]) if "subgroup_min_size" in data else None,
        bands=_bands_table(data.get("bands", {}), path),
    )
    _check_names(study)
    if any(k < 1 for k in study.shots):
        raise FmprobeError(f"{path}: 'shots' {list(study.shots)}: labelled images per class must be >= 1.")
    return study


def _bands_table(table: object, path: Path) -> dict[str, tuple[float, ...]]:
    """``bands = { age = [40, 60, 80] }``: key -> increasing edges, checked here, before any work."""
    if not isinstance(table, dict) or not all(isinstance(v, list) for v in table.values()):
        raise FmprobeError(f"{path}: 'bands' must be a table of edge lists, e.g. bands = {{ age = [40, 60, 80] }}.")
    try:
        return {str(k): check_edges(str(k), v) for k, v in table.items()}
    except FmprobeError as err:
        raise FmprobeError(f"{path}: 'bands': {err}.") from None


def _check_names(study: Study) -> None:
    """Unknown backbones, probes and baselines fail before any work, with suggestions."""
    check_probes(study.probes)  # an unknown probe fails naming the closest (first: this check needs no torch)
    for backbone in study.backbones:
        check_backbone(backbone)
    if study.baseline and study.baseline not in study.backbones:
        raise FmprobeError(
            f"{study.path}: baseline {study.baseline!r} is not among the backbones {list(study.backbones)}."
        )
    from fmprobe.probes import make_probe

    for probe, params in study.probe_params.items():
        make_probe(probe, **params)  # [probe_params.NAME]: unknown probes, parameters and bad values fail now
    if study.val_subsample is not None and study.val_subsample not in [v.value for v in ValSubsample]:
        choices = ", ".join(v.value for v in ValSubsample)
        raise FmprobeError(f"{study.path}: val_subsample {study.val_subsample!r}: choose one of {choices}.")


# extract_features keywords the study sets itself (from backbones, readouts, resolutions, out, --max-images).
_STUDY_SETS_EXTRACT = frozenset({"weights", "resolution", "readouts", "out", "max_images", "progress"})


def _renamed_keys(table: dict[str, Any], renames: dict[str, str], path: Path, where: str) -> dict[str, Any]:
    """A table with its deprecated key names (``num_workers``, ...) replaced by the new ones, said once, visibly
    (a DeprecationWarning alone is hidden from a CLI user)."""
    old = sorted(set(table) & set(renames))
    if old:
        log.warning(f"{path}: {where} " + ", ".join(f"{k} is now {renames[k]}" for k in old) + "; rename it (the old name still works for now).")
    return renamed(table, renames, f"{path}: {where}")


def _extract_table(table: object, path: Path) -> dict[str, object]:
    """Check the [extract] table against the fields of fmprobe's ExtractOptions (names and values), early."""
    if not isinstance(table, dict):
        raise FmprobeError(f"{path}: [extract] must be a table (batch_size = ..., workers = ..., ...).")
    table = _renamed_keys(table, EXTRACT_RENAMED, path, "[extract]")
    _refuse_unknown(
        table, [f.name for f in fields(ExtractOptions) if f.name not in _STUDY_SETS_EXTRACT], path, " in [extract]"
    )
    try:
        ExtractOptions(**table)
    except TypeError as err:
        raise FmprobeError(f"{path}: [extract] has a value of the wrong type ({err}).") from None
    return dict(table)


def _finetune_grid(table: object, path: Path) -> FinetuneGrid:
    """Check the [finetune] table: its keys are 'settings', Recipe fields and run options; the recipe's values are
    checked here too, by building one Recipe per setting."""
    if not isinstance(table, dict):
        raise FmprobeError(f"{path}: [finetune] must be a table (settings = [...], epochs = ..., ...).")
    table = _renamed_keys(table, RUN_RENAMED, path, "[finetune]")
    settings = table.get("settings", [])
    if not isinstance(settings, list) or not all(isinstance(s, str) for s in settings) or (table and not settings):
        raise FmprobeError(f'{path}: [finetune] settings must list e.g. ["linear", "partial:2", "full"].')
    for setting in settings:
        parse_setting(setting)
    _refuse_unknown(table, ["settings", *_recipe_names(), *_run_option_names()], path, " in [finetune]")
    grid = FinetuneGrid(tuple(settings), {k: v for k, v in table.items() if k != "settings"})
    for setting in grid.settings:
        try:
            Recipe(setting=setting, **grid.recipe)  # type: ignore[arg-type]
        except TypeError as err:  # e.g. epochs = "ten": the comparison in the recipe's checks fails
            raise FmprobeError(f"{path}: [finetune] has a value of the wrong type ({err}).") from None
    return grid


# ------------------------------------------------------------------------------------------------ planning


@dataclass(frozen=True)
class CostLine:
    dataset: str
    backbone: str
    resolution: int
    images: int
    seconds: float | None
    source: str  # "measured" (an earlier extraction's images/s) or "estimated" (FLOPs)


def estimate_cost(study: Study, max_images: int | None = None) -> list[CostLine]:
    """Images x backbones, with time from earlier measurements (feature files' images/s) or a FLOP estimate."""
    from fmprobe.backbones import get_spec, parse_name
    from fmprobe.backbones.cost import estimated_rate
    from fmprobe.runtime import choose_device

    device = choose_device(str(study.extract.get("device", "auto")))
    lines = []
    sizes: dict[str, int] = {}
    for dataset, backbone, resolution, _ in study.extraction_jobs():
        if dataset not in sizes:
            try:
                sizes[dataset] = load_dataset(dataset, max_images).num_images
            except FmprobeError as err:
                log.info("  %s: cannot be read yet (%s)", dataset, str(err).splitlines()[0])
                sizes[dataset] = 0
        spec = get_spec(parse_name(backbone)[0])
        size = resolution or spec.native_resolution
        images = sizes[dataset]
        measured = _measured_rate(study.out / "features", backbone, size)
        if measured:
            lines.append(CostLine(dataset, backbone, size, images, images / measured, "measured"))
        else:
            rate = estimated_rate(spec, size, device)
            lines.append(CostLine(dataset, backbone, size, images, images / rate if rate else None, "estimated"))
    return lines


def _measured_rate(features: Path, backbone: str, resolution: int) -> float | None:
    """The best images/s an earlier extraction of this backbone at this size recorded in its feature file."""
    from fmprobe.store import FeatureFile

    rates = []
    for path in features.rglob("*.h5") if features.exists() else []:
        try:
            f = FeatureFile(path)
        except FmprobeError:
            continue
        if f.backbone == backbone and f.resolution == resolution and float(f.attrs.get("images_per_s", 0)) > 0:
            rates.append(float(f.attrs["images_per_s"]))
    return max(rates) if rates else None


def format_plan(study: Study, costs: list[CostLine]) -> str:
    lines = [f"study {study.name!r} ({study.path}): {len(study.datasets)} dataset(s) x {len(study.backbones)} backbone(s)"
             f" x {len(study.resolutions) or 1} resolution(s); {study.probe_cells()} probe cells"
             f" ({', '.join(study.probes)}; fractions {', '.join(f'{f:g}' for f in study.train_fractions)};"
             + (f" shots {', '.join(map(str, study.shots))};" if study.shots else "") +
             f" repeats {study.repeats}); output {study.out}"]  # fmt: skip
    total, unknown = 0.0, 0
    for c in costs:
        when = "?" if c.seconds is None else _duration(c.seconds)
        lines.append(
            f"  extract {c.dataset} x {c.backbone} @ {c.resolution}px: {c.images} images, ~{when} ({c.source})"
        )
        if c.seconds is None:
            unknown += 1
        else:
            total += c.seconds
    if study.finetune_jobs():
        keywords = study.finetune.keywords
        lines.append(f"  finetune: {len(study.finetune_jobs())} run(s), settings {', '.join(study.finetune.settings)}"
                     + (f" ({', '.join(f'{k}={v}' for k, v in keywords.items())})" if keywords else ""))  # fmt: skip
    images = sum(c.images for c in costs)
    lines.append(
        f"total: {images} image-forwards, ~{_duration(total)} of extraction"
        + (f" (+{unknown} unestimated)" if unknown else "")
    )
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    return (
        f"{seconds:.0f}s" if seconds < 120 else f"{seconds / 60:.0f}min" if seconds < 7200 else f"{seconds / 3600:.1f}h"
    )


# ------------------------------------------------------------------------------------------------ running


@dataclass(frozen=True)
class StudyRun:
    """What a study run produced: the study it ran, its feature files, its report (None on a dry run or when
    nothing could be probed) and, with ``keep_going``, the jobs that failed (one line each: what and why)."""

    study: Study
    feature_files: tuple[Path, ...] = ()
    report: ReportPaths | None = None
    failures: tuple[str, ...] = ()
    missing: tuple[Missing, ...] = ()  # what the preflight found absent (datasets, weight files)


class _Failures:
    """With ``keep_going`` a failed job is recorded and the study goes on; without it the error propagates."""

    def __init__(self, keep_going: bool) -> None:
        self.keep_going = keep_going
        self.lines: list[str] = []

    @contextlib.contextmanager
    def job(self, what: str) -> Iterator[None]:
        try:
            yield
        except FmprobeError as err:
            if not self.keep_going:
                raise
            self.lines.append(f"{what}: {err}")
            log.error("failed, going on (--keep-going): %s: %s", what, err)


def init_study(path: str | Path, force: bool = False) -> Path:
    """Write a commented study template to ``path``; it runs as written (the built-in demo data, offline).

    A template that runs is the quickest way to a study of one's own: change the datasets and backbones, keep the
    rest.

    Parameters
    ----------
    path : str or Path
        Where to write the template.
    force : bool, optional
        Overwrite an existing file.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    fmprobe.errors.FmprobeError
        ``path`` exists (and ``force`` is False).

    Examples
    --------
    >>> from fmprobe import init_study
    >>> init_study("my_study.toml")
    PosixPath('my_study.toml')
    >>> init_study("my_study.toml")
    Traceback (most recent call last):
    ...
    fmprobe.errors.FmprobeError: my_study.toml exists; choose another path, or remove it first.
    """
    path = Path(path)
    if path.exists() and not force:
        raise FmprobeError(f"{path} exists; choose another path, or remove it first.")
    template = resources.files("fmprobe").joinpath("studies/template.toml").read_text(encoding="utf-8")
    atomic_write_text(path, template)
    return path


def run_study(
    study: Study | str | Path,
    *,
    out: str | Path | None = None,
    dry_run: bool = False,
    max_images: int | None = None,
    progress: bool = True,
    keep_going: bool = False,
    shard: str | Part | None = None,
) -> StudyRun:
    """Run (or, with ``dry_run``, only plan) a study: extraction (cached), probes (resumable), fine-tuning, report.

    Everything finished before is reused, so an interrupted study is run again with the same call. Every dataset
    and weight file is checked first (offline): a dry run lists what is missing, a real run refuses before any
    work.

    Parameters
    ----------
    study : Study or str or Path
        A study file (:func:`load_study` reads it) or a loaded study.
    out : str or Path or None, optional
        Overrides the study's output folder (``--out``).
    dry_run : bool, optional
        Print the grid and its estimated cost, check what is missing, run nothing.
    max_images : int or None, optional
        A quick look: at most this many images per split (``--max-images``).
    progress : bool, optional
        Show progress bars; the inverse of the CLI's ``--quiet``.
    keep_going : bool, optional
        Go on past a failed extraction, probing or fine-tuning job; the failures are listed in the returned run
        (and the log) at the end.
    shard : str or tuple of int or None, optional
        ``"I/N"`` (N processes, e.g. a job array, sharing ``out``): each shard extracts the feature files dealt to
        it first, then asks for every other one (a cache hit, a wait on the file's cache lock, or an extraction
        here that the other then finds in the cache), so every file is extracted once and every shard has all of
        them before probing; then the probe cells and finetune runs dealt to it. The report is left to one
        unsharded run when all are done (a cache hit for everything).

    Returns
    -------
    StudyRun
        The ``study``, its ``feature_files``, the ``report`` paths (None on a dry run, a shard or a failed
        report), the ``failures`` (with ``keep_going``) and what the preflight found ``missing``.

    Raises
    ------
    fmprobe.errors.FmprobeError
        A bad study file; data or weights missing (without ``keep_going``); the first failed job (without
        ``keep_going``).

    Examples
    --------
    >>> from fmprobe import init_study, run_study
    >>> plan = run_study(init_study("my_study.toml"), dry_run=True)  # doctest: +SKIP
    >>> run = run_study("my_study.toml", max_images=40)  # doctest: +SKIP
    >>> run.report.html  # doctest: +SKIP
    PosixPath('runs/my-study/report/report.html')
    """
    if isinstance(study, Study):
        study = replace(study, out=Path(out)) if out is not None else study
    else:
        study = load_study(study, out)
    log.info("%s", format_plan(study, estimate_cost(study, max_images)))
    missing = tuple(check_datasets(study.datasets, max_images) + check_weights(study.backbones, study.weights, study.path))
    for item in missing:
        log.warning("missing: %s", item)
    if dry_run:
        return StudyRun(study, missing=missing)
    if missing and not keep_going:
        raise FmprobeError(
            f"{study.path}: {len(missing)} thing(s) this study needs are missing (nothing was run):\n  "
            + "\n  ".join(map(str, missing)) + "\nFix them, or run with --keep-going to do what can be done."
        )  # fmt: skip
    from fmprobe.report import write_report

    failures, part = _Failures(keep_going), as_part(shard)
    feature_files = tuple(_extract(study, max_images, progress, failures, part))
    _probe(study, feature_files, progress, failures, part)
    _finetune(study, max_images, progress, failures, part)
    report = None
    if part != WHOLE:
        log.info(f"shard {part[0]}/{part[1]} done; when every shard is, `fmprobe study {study.path}` (all cached) writes the report")
    else:
        with failures.job("report"):
            report = write_report(study.out / "results", study.out / "report", baseline=study.baseline)
            log.info("report: %s", report.html)
    if failures.lines:
        log.error("%d job(s) failed:\n  %s", len(failures.lines), "\n  ".join(failures.lines))
    return StudyRun(study, feature_files, report, tuple(failures.lines))


def _job_key(job: tuple[object, ...]) -> str:
    """The name a study job (an extraction or finetune run) is dealt to a shard by."""
    return "|".join(map(str, job))


def _extract(study: Study, max_images: int | None, progress: bool, failures: _Failures, part: Part = WHOLE) -> list[Path]:
    """Every feature file of the study, in the study's order; a shard extracts the ones dealt to it first (see
    :func:`run_study`), then the others (cache hits, or a wait on the file's lock while their shard writes them).
    A failed job (with ``keep_going``) has no file."""
    from fmprobe.backbones import parse_name
    from fmprobe.extract import extract_features

    jobs = study.extraction_jobs()
    mine = [job for job in jobs if dealt(_job_key(job), part)]
    agreed = _agreed_dtype(study, part)
    paths: dict[tuple, Path] = {}
    for job in mine + [job for job in jobs if job not in mine]:
        dataset, backbone, resolution, readouts = job
        with failures.job(f"extract {dataset} x {backbone}" + (f" @{resolution}" if resolution else "")):
            result = extract_features(
                dataset, backbone, weights=study.weights.get(parse_name(backbone)[0]), resolution=resolution,
                readouts=readouts, out=study.out / "features", max_images=max_images, progress=progress,
                **{**study.extract, **agreed},  # type: ignore[arg-type]
            )  # fmt: skip
            paths[job] = result.path
    return [paths[job] for job in jobs if job in paths]


def _agreed_dtype(study: Study, part: Part) -> dict[str, str]:
    """A shard's compute dtype where ``auto`` would time bf16 against fp32 (CPUs with native bf16): the capability's
    choice, as sharded extractions take it, since shards timing at once could choose differently and write two
    files (two keys) of one job. Unsharded runs, and studies whose [extract] sets ``dtype``, pass nothing."""
    if part == WHOLE or "dtype" in study.extract:
        return {}
    from fmprobe.runtime import choose_device, dtype_candidates

    return {"dtype": dtype_candidates(choose_device(str(study.extract.get("device", "auto"))), "auto")[0]}


def _probe(study: Study, feature_files: tuple[Path, ...], progress: bool, failures: _Failures, part: Part) -> None:
    """Probe the feature files (this shard's cells): all in one run, or (keep-going) one run per file so one failure
    spares the rest."""
    from fmprobe.probing import probe_features

    keywords = dict(
        probes=study.probes, readouts=None, train_fractions=study.train_fractions, shots=study.shots,
        repeats=study.repeats, seed=study.seed, out=study.out / "results", progress=progress,
        val_subsample=study.val_subsample, subgroups=study.subgroups, subgroup_min_size=study.subgroup_min_size,
        bands=study.bands or None, shard=part, probe_params=study.probe_params, **study.bootstrap_keywords(),
    )  # fmt: skip
    for batch in ([f] for f in feature_files) if failures.keep_going else [feature_files]:
        if batch:
            with failures.job(f"probe {batch[0].name}" if failures.keep_going else "probe"):
                probe_features(batch, **keywords)  # type: ignore[arg-type]


def _finetune(study: Study, max_images: int | None, progress: bool, failures: _Failures, part: Part = WHOLE) -> None:
    for job in [job for job in study.finetune_jobs() if dealt(_job_key(job), part)]:
        dataset, backbone, resolution, setting = job
        with failures.job(f"finetune {dataset} x {backbone} ({setting})"):
            _finetune_one(study, job, max_images, progress)


def _finetune_one(study: Study, job: tuple[str, str, int | None, str], max_images: int | None, progress: bool) -> None:
    # With the recipe/options API this call is run_finetune(dataset, backbone,
    # Recipe(setting=setting, **grid.recipe), RunOptions(weights=..., resolution=..., seed=..., out=...,
    # max_images=..., progress=..., **study.bootstrap_keywords(), **grid.options)).
    from fmprobe.backbones import parse_name
    from fmprobe.finetune import plot_training_curves, run_finetune

    dataset, backbone, resolution, setting = job
    grid = study.finetune
    run = run_finetune(
        dataset, backbone, setting=setting, weights=study.weights.get(parse_name(backbone)[0]),
        resolution=resolution, seed=study.seed, out=study.out, max_images=max_images, progress=progress,
        **{**study.bootstrap_keywords(), **grid.recipe, **grid.options},  # type: ignore[arg-type]
    )  # fmt: skip
    if run.history and not run.skipped:
        plot_training_curves(run.history, run.run_dir / "curves.png", title=f"{backbone} · {run.probe}")


__all__ = ["CostLine", "FinetuneGrid", "Study", "StudyRun", "estimate_cost", "format_plan", "init_study",
           "load_study", "run_study"]  # fmt: skip

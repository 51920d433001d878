"""What `fmprobe probe` crosses with every feature file: :class:`ProbeGrid`, whose field defaults are the library's.

Light on purpose (no scikit-learn, LightGBM, pandas or HDF5 at import): the CLI reads the defaults for its
``--help`` on every start. The probe registry is imported only when a grid is built, to check its names and
parameters before any work.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import MISSING as dataclasses_missing
from dataclasses import dataclass, field, fields
from enum import StrEnum
from numbers import Integral

from fmprobe._io import accepts_renamed, renamed
from fmprobe.errors import FmprobeError
from fmprobe.metrics import N_BOOTSTRAP
from fmprobe.metrics.subgroups import DEFAULT_BANDS, MIN_GROUP_SIZE, MIN_SIZE_OPTION, check_edges, parse_bands

DEFAULT_PROBES: tuple[str, ...] = ("logreg", "knn", "lgbm")
PROBE_PARAM_FORM = "PROBE.PARAMETER=VALUE, e.g. lgbm.n_jobs=1 or logreg.Cs=0.01,0.1,1"

ProbeParams = Mapping[str, Mapping[str, object]]


def parse_value(text: str) -> object:
    """A command-line value: true/false, none, an int, a float, a comma-separated tuple of those, else the string."""
    if "," in text:
        return tuple(parse_value(t.strip()) for t in text.split(",") if t.strip())
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text.strip()


def parse_probe_params(items: Iterable[str] | ProbeParams) -> dict[str, dict[str, object]]:
    """``["lgbm.n_jobs=1", ...]`` (the CLI's repeatable ``--probe-param``) or a mapping (a study's
    ``[probe_params.lgbm]`` table, the Python API) -> ``{"lgbm": {"n_jobs": 1}}``. Names and values are checked
    later, against the probe's parameter constraints, when the grid is built."""
    if isinstance(items, Mapping):
        out: dict[str, dict[str, object]] = {}
        for probe, params in items.items():
            if not isinstance(params, Mapping):
                raise FmprobeError(f"probe_params[{probe!r}] must map parameter names to values, got {params!r}.")
            out[str(probe)] = dict(params)
        return out
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        probe, dot, name = key.strip().partition(".")
        if not (sep and dot and probe and name):
            raise FmprobeError(f"--probe-param {item!r}: write {PROBE_PARAM_FORM}.")
        out.setdefault(probe, {})[name.strip()] = parse_value(value)
    return out


__all__ = ["DEFAULT_BANDS", "DEFAULT_PROBES", "PROBE_PARAM_FORM", "ProbeGrid", "ValSubsample", "cell_repeats", "parse_bands",
           "parse_probe_params", "parse_value"]


class ValSubsample(StrEnum):
    """Which validation rows choose a cell's hyper-parameters when it trains on a fraction of the training set.

    ``proportional``: a seeded stratified subsample of validation of the same fraction (every class kept; whole
    groups where validation has them), so a low-label cell is tuned on as little labelled data as a low-label
    study would have. ``full``: every validation row, which makes low-label numbers optimistic.
    """

    proportional = "proportional"
    full = "full"


def cell_repeats(probe: str, fraction: float, repeats: int, shots: int = 0) -> int:
    """How many repeats a (probe, train fraction or shots) pair gets: ``repeats`` when a repeat can differ (a
    subsample of the training set, a k-shot draw, or a stochastic probe), else 1 (a deterministic probe on all the
    data)."""
    from fmprobe.probes import is_stochastic  # the registry (scikit-learn, LightGBM) only once a grid is used

    return repeats if (shots or fraction < 1.0 or is_stochastic(probe)) else 1


# ProbeGrid's (and probe_features') deprecated keyword names (old -> new): the name now matches --bootstrap.
GRID_RENAMED = {"n_resamples": "n_bootstrap"}


@accepts_renamed(GRID_RENAMED)
@dataclass(frozen=True)
class ProbeGrid:
    """What `fmprobe probe` crosses with every feature file; the field defaults are the library's defaults.

    One record of the grid, so the CLI, study files and the Python API share one set of defaults and one set of
    checks: building a grid checks every probe name and parameter (against the probe's constraints), so a bad one
    fails before any work, naming the probe and the parameter. The old field name ``n_resamples`` still works,
    with a ``DeprecationWarning``.

    Attributes
    ----------
    probes : tuple of str
        Probe names (see :func:`fmprobe.make_probe`).
    readouts : tuple of str
        Readouts to probe; ``()``: every readout stored in each file.
    train_fractions : tuple of float
        Fractions of the training labels, each in (0, 1].
    shots : tuple of int
        Few-shot cells next to the fraction cells: k labelled training images per class for every k listed (one
        per patient/lesion where the training split records groups), each drawn ``repeats`` times.
    repeats : int
        Repeats of a cell that can differ (a subsample, a k-shot draw, a stochastic probe).
    seed : int
        The base seed (repeat r uses ``seed + 1000 r``).
    n_bootstrap : int
        Bootstrap resamples per confidence interval (``--bootstrap``; 0: no intervals).
    val_subsample : ValSubsample
        Which validation rows tune a fraction cell (``proportional`` or ``full``).
    probe_params : dict
        Probe name -> keyword arguments for it; ``"probe.parameter=value"`` strings are accepted too
        (:func:`parse_probe_params`).
    subgroups : tuple of str
        Test-metadata attributes (``sex``, ``site``, or a derived ``<key>_band``) every cell is also scored per
        value of, on its one fit (see :mod:`fmprobe.metrics.subgroups`).
    subgroup_min_size : int
        Test rows a subgroup needs for a number; smaller groups are reported as too small.
    bands : dict
        Edges of each derived ``<key>_band`` attribute; edges given for a key replace its defaults
        (:data:`~fmprobe.metrics.subgroups.DEFAULT_BANDS`).

    Raises
    ------
    fmprobe.errors.FmprobeError
        An unknown probe, a bad parameter, a fraction outside (0, 1], ``repeats`` or a shot count below 1, or bad
        subgroup options.

    Examples
    --------
    >>> from fmprobe import ProbeGrid
    >>> grid = ProbeGrid(probes=["logreg"], train_fractions=[0.1, 1.0], repeats=3, n_bootstrap=200)
    >>> grid.train_fractions, grid.n_bootstrap
    ((0.1, 1.0), 200)
    >>> grid.cells_per_readout()  # three subsamples of 10 %, one fit on all the labels
    4
    >>> ProbeGrid.defaults()["probes"]
    ('logreg', 'knn', 'lgbm')
    """

    probes: tuple[str, ...] = DEFAULT_PROBES
    readouts: tuple[str, ...] = ()
    train_fractions: tuple[float, ...] = (1.0,)
    shots: tuple[int, ...] = ()
    repeats: int = 1
    seed: int = 0
    n_bootstrap: int = N_BOOTSTRAP
    val_subsample: ValSubsample = ValSubsample.proportional
    probe_params: ProbeParams | Iterable[str] = field(default_factory=dict)
    subgroups: tuple[str, ...] = ()
    subgroup_min_size: int = MIN_GROUP_SIZE
    bands: Mapping[str, tuple[float, ...]] = field(default_factory=lambda: dict(DEFAULT_BANDS))

    def __post_init__(self) -> None:
        from fmprobe.probes import PROBES, make_probe  # validation needs the registry; reading defaults does not

        for name in ("probes", "readouts", "train_fractions"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        object.__setattr__(self, "train_fractions", tuple(float(f) for f in self.train_fractions))
        try:  # the Python API and study files pass plain strings
            object.__setattr__(self, "val_subsample", ValSubsample(self.val_subsample))
        except ValueError:
            choices = ", ".join(v.value for v in ValSubsample)
            raise FmprobeError(f"--val-subsample {self.val_subsample!r}: choose one of {choices}.") from None
        object.__setattr__(self, "probe_params", parse_probe_params(self.probe_params))
        for name in (*self.probes, *self.probe_params):
            PROBES.get(name)  # unknown names fail before any work, with suggestions
        for name, params in self.probe_params.items():
            make_probe(name, **params)  # bad parameter values too
        bad = [f for f in self.train_fractions if not 0 < f <= 1]
        if bad:
            raise FmprobeError(f"--train-fraction {bad}: fractions must be in (0, 1].")
        if self.repeats < 1:
            raise FmprobeError(f"--repeats {self.repeats}: must be at least 1.")
        self._check_shots()
        self._check_subgroups()

    def _check_subgroups(self) -> None:
        names = tuple(dict.fromkeys(str(a).strip() for a in self.subgroups))
        if any(not a for a in names):
            raise FmprobeError(f"--subgroups {list(self.subgroups)}: give attribute names, e.g. sex,age_band,site.")
        object.__setattr__(self, "subgroups", names)
        size = self.subgroup_min_size
        if isinstance(size, bool) or not isinstance(size, Integral) or size < 1:
            raise FmprobeError(
                f"{MIN_SIZE_OPTION} {size!r}: give a whole number of test rows >= 1 (default {MIN_GROUP_SIZE})."
            )
        try:
            given = {**DEFAULT_BANDS, **dict(self.bands)}  # edges given replace a key's defaults, others stay
            bands = {str(k): check_edges(str(k), v) for k, v in given.items()}
        except (TypeError, ValueError, FmprobeError) as err:
            raise FmprobeError(str(err)) from None
        object.__setattr__(self, "bands", bands)

    def _check_shots(self) -> None:
        shots = tuple(self.shots)
        bad = [k for k in shots if isinstance(k, bool) or not isinstance(k, Integral) or k < 1]
        if bad:
            raise FmprobeError(f"--shots {bad}: labelled images per class must be whole numbers >= 1, e.g. 1,2,4,8,16.")
        object.__setattr__(self, "shots", tuple(sorted({int(k) for k in shots})))

    @classmethod
    def defaults(cls) -> dict[str, object]:
        """Field name -> default, read without building a grid (so without the probe registry): what ``--help``
        shows."""
        return {f.name: f.default for f in fields(cls) if f.default_factory is dataclasses_missing}

    @classmethod
    def from_options(cls, **options: object) -> ProbeGrid:
        """A grid from keyword options where None means "the default" (what the CLI and study files pass)."""
        options = renamed(options, GRID_RENAMED, "ProbeGrid.from_options")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - names)
        if unknown:
            raise TypeError(f"ProbeGrid has no field(s) {', '.join(unknown)}; fields: {', '.join(sorted(names))}")
        return cls(**{k: v for k, v in options.items() if v is not None})  # type: ignore[arg-type]

    def cells_per_readout(self) -> int:
        """Cells one readout of one feature file gets from this grid."""
        fractions = sum(cell_repeats(p, f, self.repeats) for p in self.probes for f in self.train_fractions)
        return fractions + len(self.probes) * len(self.shots) * self.repeats

"""`fmprobe probe`: feature files -> probe cells -> result rows (resumable by cell).

:mod:`fmprobe.probing.grid` says what to run (:class:`ProbeGrid`, light: the CLI reads its defaults on every
start); :mod:`fmprobe.probing.plan` lists the cells
(:mod:`fmprobe.probing.sampling`: which rows each fits and chooses on), :mod:`fmprobe.probing.run` fits them and
:mod:`fmprobe.probing.scoring` scores each once on test. Names resolve lazily, so importing this package (or
the grid) pulls in neither scikit-learn nor pandas.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fmprobe._io import lazy_attributes, lazy_dir
from fmprobe.probing.grid import DEFAULT_BANDS, DEFAULT_PROBES, ProbeGrid, ValSubsample, cell_repeats, parse_bands

_LAZY = {
    **dict.fromkeys(("ProbeRun", "probe_features", "run_probing"), "fmprobe.probing.run"),
    **dict.fromkeys(("ProbeCell", "ProbePlan", "find_feature_files", "plan_probing"), "fmprobe.probing.plan"),
    "subsample": "fmprobe.probing.sampling",
}

if TYPE_CHECKING:  # pragma: no cover
    from fmprobe.probing.plan import ProbeCell, ProbePlan, find_feature_files, plan_probing
    from fmprobe.probing.run import ProbeRun, probe_features, run_probing
    from fmprobe.probing.sampling import subsample

__getattr__ = lazy_attributes(__name__, _LAZY)
__dir__ = lazy_dir(__name__, _LAZY)

__all__ = [
    "DEFAULT_BANDS",
    "DEFAULT_PROBES",
    "ProbeGrid",
    "ValSubsample",
    "cell_repeats",
    "parse_bands",
    "ProbeCell",
    "ProbePlan",
    "ProbeRun",
    "find_feature_files",
    "plan_probing",
    "probe_features",
    "run_probing",
    "subsample",
]

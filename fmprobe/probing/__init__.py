"""`fmprobe probe`: feature files -> probe cells -> result rows (resumable by cell).

:mod:`fmprobe.probing.grid` says what to run (:class:`ProbeGrid`, light: the CLI reads its defaults on every
start); :mod:`fmprobe.probing.run` plans and fits the cells. Names resolve lazily, so importing this package (or
the grid) pulls in neither scikit-learn nor pandas.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fmprobe._io import lazy_attributes
from fmprobe.probing.grid import DEFAULT_PROBES, ProbeGrid, ValSubsample, cell_repeats

_LAZY = {
    name: "fmprobe.probing.run"
    for name in (
        "ProbeCell", "ProbePlan", "ProbeRun", "find_feature_files", "plan_probing", "probe_features", "run_probing",
        "subsample",
    )
}  # fmt: skip

if TYPE_CHECKING:  # pragma: no cover
    from fmprobe.probing.run import (
        ProbeCell,
        ProbePlan,
        ProbeRun,
        find_feature_files,
        plan_probing,
        probe_features,
        run_probing,
        subsample,
    )

__getattr__ = lazy_attributes(__name__, _LAZY)

__all__ = [
    "DEFAULT_PROBES",
    "ProbeGrid",
    "ValSubsample",
    "cell_repeats",
    "ProbeCell",
    "ProbePlan",
    "ProbeRun",
    "find_feature_files",
    "plan_probing",
    "probe_features",
    "run_probing",
    "subsample",
]

"""Tables, plots and Markdown/HTML reports from a results table (no torch: reports render on a laptop).

The options (:class:`ReportOptions`) import nothing heavy; the rest resolves on first use (pandas, matplotlib).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fmprobe._io import lazy_attributes, lazy_dir
from fmprobe.report.options import N_RESAMPLES, SEED, RecommendOptions, ReportOptions

_LAZY = {name: "fmprobe.report.build" for name in ("ReportPaths", "format_table", "write_report")}

if TYPE_CHECKING:  # pragma: no cover
    from fmprobe.report.build import ReportPaths, format_table, write_report

__getattr__ = lazy_attributes(__name__, _LAZY)
__dir__ = lazy_dir(__name__, _LAZY)

__all__ = ["N_RESAMPLES", "SEED", "ReportOptions", "ReportPaths", "format_table", "write_report"]
__all__ += ["RecommendOptions"]  # the recommendation itself: fmprobe.report.recommend (module and function)

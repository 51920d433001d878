"""Tables, plots and Markdown/HTML reports from a results table (no torch: reports render on a laptop)."""

from __future__ import annotations

from fmprobe.report.build import N_RESAMPLES, SEED, ReportPaths, format_table, write_report

__all__ = ["N_RESAMPLES", "SEED", "ReportPaths", "format_table", "write_report"]

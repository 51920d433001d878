"""fmprobe: which pretrained image backbone transfers best to your medical images?

The public API (the CLI is a thin layer over these; they work the same from a notebook).
Heavy modules (torch) are imported lazily so that probing and reporting run with numpy alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fmprobe._io import __version__, lazy_attributes, lazy_dir

# Public names never equal a submodule's name (importing fmprobe.extract would shadow a function `extract`).
_LAZY = {
    "extract_features": "fmprobe.extract",
    "ExtractResult": "fmprobe.extract",
    "ExtractionPlan": "fmprobe.extract",
    "plan_extraction": "fmprobe.extract",
    "ExtractOptions": "fmprobe.runtime",  # torch-free: the CLI reads defaults and choices without loading torch
    "OnError": "fmprobe.runtime",
    "FeatureDtype": "fmprobe.runtime",
    "ComputeDtype": "fmprobe.runtime",
    "Device": "fmprobe.runtime",
    "load_dataset": "fmprobe.datasets",
    "describe_sources": "fmprobe.datasets",
    "list_models": "fmprobe.backbones.catalog",  # torch-free: reads the catalog's data
    "check_backbone_name": "fmprobe.backbones.catalog",  # torch-free: the CLI checks names before importing torch
    "create_backbone": "fmprobe.backbones",
    "FeatureFile": "fmprobe.store",
    "merge_shards": "fmprobe.store",
    "export_features": "fmprobe.store.export",
    "probe_features": "fmprobe.probing",
    "make_probe": "fmprobe.probes",
    "ProbeGrid": "fmprobe.probing",
    "write_report": "fmprobe.report",
    "ReportOptions": "fmprobe.report",  # light: the CLI reads the report's defaults without pandas
    "format_table": "fmprobe.report",
    "recommend": "fmprobe.report.recommend",
    "Recommendation": "fmprobe.report.recommend",
    "RecommendOptions": "fmprobe.report",  # light, like ReportOptions
    "read_results": "fmprobe.results",
    "run_demo": "fmprobe.demo",
    "run_study": "fmprobe.study",
    "load_study": "fmprobe.study",
    "init_study": "fmprobe.study",
    "run_finetune": "fmprobe.finetune",
    "plot_training_curves": "fmprobe.finetune",
    "Recipe": "fmprobe.finetune",
    "RunOptions": "fmprobe.finetune",
    "Schedule": "fmprobe.finetune",
    "Balance": "fmprobe.finetune",
    "Head": "fmprobe.finetune",
    "imagenet_baselines": "fmprobe.backbones",
}

if TYPE_CHECKING:  # pragma: no cover
    from fmprobe.backbones import create_backbone, imagenet_baselines
    from fmprobe.backbones.catalog import check_backbone_name, list_models
    from fmprobe.datasets import describe_sources, load_dataset
    from fmprobe.demo import run_demo
    from fmprobe.extract import ExtractionPlan, ExtractResult, extract_features, plan_extraction
    from fmprobe.finetune import Balance, Head, Recipe, RunOptions, Schedule, plot_training_curves, run_finetune
    from fmprobe.probes import make_probe
    from fmprobe.probing import ProbeGrid, probe_features
    from fmprobe.report import RecommendOptions, ReportOptions, format_table, write_report
    from fmprobe.report.recommend import Recommendation, recommend
    from fmprobe.results import read_results
    from fmprobe.runtime import ComputeDtype, Device, ExtractOptions, FeatureDtype, OnError
    from fmprobe.store import FeatureFile, merge_shards
    from fmprobe.store.export import export_features
    from fmprobe.study import init_study, load_study, run_study


__getattr__ = lazy_attributes(__name__, _LAZY)
__dir__ = lazy_dir(__name__, _LAZY)


__all__ = ["__version__", *_LAZY]

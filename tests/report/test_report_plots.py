"""The report's plots: drawn off-screen, written atomically as PNG (>= 200 dpi) and SVG, the same bytes for the same
numbers; the gain chart's title, zero gains, legend and single-dataset mean."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.image import imread

from fmprobe.report import plots
from fmprobe.report.analysis import Gain, Headline, MeanGain
from fmprobe.report.plots import MEAN_GROUP, confusion_chart, gain_chart


def test_confusion_chart_is_reproducible_and_leaves_the_backend_alone(tmp_path: Path) -> None:
    backend = matplotlib.get_backend()
    cm = np.array([[5, 1], [2, 7]])
    a = confusion_chart("d", "best", cm, ["no", "yes"], tmp_path / "a.png")
    b = confusion_chart("d", "best", cm, ["no", "yes"], tmp_path / "b.png")
    assert a.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and a.read_bytes() == b.read_bytes()
    assert (tmp_path / "a.svg").read_bytes() == (tmp_path / "b.svg").read_bytes()  # SVG reproducible too
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "a.svg", "b.png", "b.svg"]  # no temporary file
    assert matplotlib.get_backend() == backend


def test_every_plot_is_written_at_print_resolution_with_an_svg_beside_it(tmp_path: Path) -> None:
    png = confusion_chart("d", "best", np.array([[5, 1], [2, 7]]), ["no", "yes"], tmp_path / "c.png")
    height, width = imread(png).shape[:2]
    fig_w, fig_h = 2.8 + 0.55 * 2 + 1.2, 2.8 + 0.55 * 2  # the confusion chart's figure size, inches
    assert plots.DPI >= 200 and (width, height) == (round(fig_w * plots.DPI), round(fig_h * plots.DPI))
    svg = plots.vector_of(png).read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg and ">yes<" in svg  # text kept as text (editable)


def _headline(datasets: list[str], models: dict[str, list[float]], baseline: str = "base") -> Headline:
    gains = [Gain(d, m, "roc_auc", rel=r, rel_low=r - 0.02, rel_high=r + 0.02)
             for m, rels in models.items() for d, r in zip(datasets, rels, strict=True)]  # fmt: skip
    means = [MeanGain(m, float(np.mean(r)), float(np.mean(r)) - 0.01, float(np.mean(r)) + 0.01, tuple(datasets))
             for m, r in models.items()]  # fmt: skip
    return Headline(baseline, "", gains, means, list(models))


def _render(h: Headline, datasets: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Figure:
    saved: list[Figure] = []
    real = plots._save
    monkeypatch.setattr(plots, "_save", lambda fig, path: (saved.append(fig), real(fig, path))[1])
    colors = plots.model_colors([h.baseline, *h.models])
    assert gain_chart(h, datasets, colors, tmp_path / "gain.png").exists()
    return saved[0]


def test_gain_chart_title_fits_a_zero_gain_shows_and_the_legend_is_beside_the_bars(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = "a_very_long_baseline_backbone_name_vit_large_patch14_dinov2_imagenet22k_finetuned"
    h = _headline(["d1", "d2"], {"m_zero": [0.0, 0.05], "m_other": [-0.03, 0.08]}, base)
    fig = _render(h, ["d1", "d2"], tmp_path, monkeypatch)
    ax = fig.axes[0]
    fig.canvas.draw()
    title, frame = ax.title.get_window_extent(), fig.bbox
    assert base in ax.get_title().replace("\n", "")
    assert frame.x0 <= title.x0 and title.x1 <= frame.x1 and title.y1 <= frame.y1  # not clipped
    ends = {line.get_gid(): line for line in ax.lines if (line.get_gid() or "").startswith("end:")}
    zero = ends["end:m_zero"]
    assert zero.get_marker() not in (None, "", "None") and zero.get_ydata()[0] == 0.0  # a gain of 0 is drawn
    legend = ax.get_legend().get_window_extent()
    assert not legend.overlaps(ax.get_window_extent())  # outside the data area
    assert legend.x1 <= frame.x1  # and inside the figure
    assert [t.get_text() for t in ax.get_xticklabels()] == ["d1", "d2", MEAN_GROUP]


def test_gain_chart_with_one_dataset_draws_no_mean(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fig = _render(_headline(["only"], {"m": [0.1]}), ["only"], tmp_path, monkeypatch)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["only"]
    assert [len(c) for c in ax.containers if hasattr(c, "patches")] == [1]  # one bar, no repeated "mean"

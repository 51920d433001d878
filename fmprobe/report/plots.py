"""The report's plots, each as a PNG (for the report to embed) and an SVG beside it (for papers).

Figures are built with matplotlib's object API on an explicit Agg canvas, never through pyplot: nothing
opens a window, nothing depends on (or changes) the user's global backend, e.g. inside a notebook.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from fmprobe._io import atomic_write
from fmprobe.report.analysis import Axis, CurvePoint, Headline

DPI = 200  # PNG resolution: print quality (the SVG is resolution-free)
PALETTE = matplotlib.colormaps["tab10"].colors


def _figure(width: float, height: float) -> tuple[Figure, Axes]:
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig, fig.subplots()


def _save(fig: Figure, path: Path, tight: bool = True) -> Path:
    """Write the PNG (``path``, at :data:`DPI`) and the same figure as SVG beside it (``path`` with suffix .svg),
    each atomically (a reader never sees half a plot), without version or date: the same numbers give the same
    bytes. Returns the PNG's path; :func:`vector_of` gives the SVG's. ``tight``: apply tight layout first,
    unless a layout was already applied (:func:`fit_title`) or the plot placed its axes itself (False)."""
    if tight and fig.get_layout_engine() is None:
        fig.tight_layout()
    png = path.with_suffix(".png")
    atomic_write(png, lambda tmp: fig.savefig(tmp, dpi=DPI, format="png", metadata={"Software": None}))
    with matplotlib.rc_context({"svg.hashsalt": "fmprobe", "svg.fonttype": "none"}):  # stable ids, editable text
        atomic_write(
            vector_of(png),
            lambda tmp: fig.savefig(tmp, format="svg", metadata={"Date": None, "Creator": None, "Format": None}),
        )
    return png


DISPLAY_DPI = 100  # a plot is shown at the size it would have at this resolution (its PNG holds DPI / 100 x more)


def display_width(png: Path) -> int:
    """CSS pixels to show a plot's PNG at: its pixel width scaled from :data:`DPI` to :data:`DISPLAY_DPI`, so the
    extra resolution sharpens it instead of doubling its size on the page."""
    from PIL import Image as PILImage  # matplotlib's own dependency

    with PILImage.open(png) as image:
        return round(image.width * DISPLAY_DPI / DPI)


def vector_of(png: Path) -> Path:
    """The SVG written beside a plot's PNG by :func:`_save`."""
    return png.with_suffix(".svg")


def fit_title(fig: Figure, ax: Axes, text: str, fontsize: float = 10) -> None:
    """Set ``ax``'s title wrapped to the figure's width, shrinking the font until it lies inside the figure."""
    width_pt = fig.get_figwidth() * 72
    for size in (fontsize, fontsize - 1, fontsize - 2, fontsize - 3):
        chars = max(20, int(width_pt * 0.9 / (0.55 * size)))  # ~0.55 em per character in the default font
        title = ax.set_title("\n".join(textwrap.wrap(text, chars, break_long_words=True)), fontsize=size)
        fig.tight_layout()  # room above the axes for the lines the title takes
        fig.canvas.draw()
        box, frame = title.get_window_extent(), fig.bbox
        if box.x0 >= frame.x0 and box.x1 <= frame.x1 and box.y1 <= frame.y1:
            return


def model_colors(models: list[str]) -> dict[str, tuple[float, ...]]:
    """One colour per model, the same in every plot of a report (baseline first, so it keeps one colour)."""
    return {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(models)}


MEAN_GROUP = "mean over datasets"


def _gain_series(h: Headline, datasets: list[str], model: str, with_mean: bool) -> np.ndarray:
    """[3, groups] of gain, CI low, CI high (%) of ``model`` per dataset (and the mean); NaN where missing."""
    out = []
    for d in datasets:
        g = next((g for g in h.gains if g.dataset == d and g.model == model and not g.reason), None)
        out.append((np.nan,) * 3 if g is None else (g.rel, g.rel_low, g.rel_high))
    if with_mean:
        mg = next((mg for mg in h.means if mg.model == model), None)
        out.append((np.nan,) * 3 if mg is None else (mg.rel, mg.low, mg.high))
    return 100 * np.array(out, dtype=float).T.reshape(3, -1)


def gain_chart(h: Headline, datasets: list[str], colors: dict[str, tuple[float, ...]], path: Path) -> Path:
    """Grouped bars: relative gain (%) of each model over the baseline per dataset and, with two or more datasets,
    averaged; 95% CI. A marker on every bar's end, so a gain of exactly 0 still shows; legend right of the axes."""
    with_mean = len(datasets) > 1  # with one dataset its mean is the dataset itself
    groups = datasets + ([MEAN_GROUP] if with_mean else [])
    models = h.models
    fig, ax = _figure(max(6.0, 1.3 * len(groups) * max(1, len(models)) ** 0.5 + 3.5), 4.2)
    width = 0.8 / max(1, len(models))
    x = np.arange(len(groups))
    for i, m in enumerate(models):
        v, lo, hi = _gain_series(h, datasets, m, with_mean)
        pos = x - 0.4 + width * (i + 0.5)
        ax.bar(pos, v, width * 0.92, color=colors[m], label=m, yerr=np.vstack([v - lo, hi - v]), capsize=3,
               error_kw={"elinewidth": 1, "ecolor": "#333333"})  # fmt: skip
        ax.plot(pos, v, "D", color=colors[m], mec="#222222", mew=0.7, ms=4, label="_nolegend_", gid=f"end:{m}")
    ax.axhline(0, color="#444444", lw=0.8)
    ax.set_xticks(x, groups, rotation=15 if len(groups) > 3 else 0, ha="right" if len(groups) > 3 else "center")
    ax.set_ylabel("\n".join(textwrap.wrap(f"relative gain over {h.baseline} (%)", 40)))
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fit_title(fig, ax, f"Gain over baseline {h.baseline} (primary metric, 95% paired-bootstrap CI)")
    return _save(fig, path)


_AXES = {  # x label and log base of each data-efficiency panel
    Axis.fraction: ("fraction of training set (log scale)", 10),
    Axis.shots: ("labelled training images per class (log2 scale)", 2),
}


def _efficiency_panel(
    ax: Axes, axis: Axis, curves: dict[str, list[CurvePoint]], colors: dict[str, tuple[float, ...]], baseline: str
) -> None:
    xs: set[float] = set()
    for model, pts in sorted(curves.items()):
        pts = sorted(pts, key=lambda p: p.x)
        x = np.array([p.x for p in pts], dtype=float)
        xs.update(x.tolist())
        mean = np.array([p.mean for p in pts])
        color = colors.get(model, "#555555")
        label = f"{model} (baseline)" if model == baseline else model
        ax.plot(x, mean, "o--" if model == baseline else "o-", color=color, lw=1.6, ms=4, label=label)
        ax.fill_between(x, [p.ci_low for p in pts], [p.ci_high for p in pts], color=color, alpha=0.15, lw=0)
        if any(p.sd > 0 for p in pts):
            ax.errorbar(x, mean, yerr=[p.sd for p in pts], fmt="none", ecolor=color, elinewidth=1, capsize=2)
    xlabel, base = _AXES[axis]
    ax.set_xscale("log", base=base)
    ticks = sorted(xs)
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel(xlabel)
    ax.grid(alpha=0.3)


def efficiency_chart(
    dataset: str,
    metric: str,
    panels: Mapping[Axis | str, dict[str, list[CurvePoint]]],
    colors: dict[str, tuple[float, ...]],
    baseline: str,
    path: Path,
) -> Path:
    """Primary metric vs train fraction (log x) and, when ``panels`` has shot curves, vs shots per class (log2 x),
    side by side; band = mean ± 1.96 sd of one repeat (repeats and test-set bootstrap, see
    ``analysis.repeat_band``), error bars = sd over repeats; baseline dashed. Empty panels are left out."""
    shown = [(Axis(a), c) for a, c in panels.items() if c]
    fig = Figure(figsize=(7.6 if len(shown) < 2 else 12.4, 4.0))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, max(1, len(shown)), sharey=True, squeeze=False)[0]
    for ax, (axis, curves) in zip(axes, shown, strict=False):
        _efficiency_panel(ax, axis, curves, colors, baseline)
    axes[0].set_ylabel(f"{metric} (test)")
    fig.suptitle(f"{dataset}: data efficiency", fontsize=10)
    axes[-1].legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(fig, path)


def confusion_chart(dataset: str, title: str, cm: np.ndarray, class_names: list[str], path: Path) -> Path:
    """Counts in the cells, colour = row-normalised rate (recall per true class)."""
    k = cm.shape[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        rates = np.nan_to_num(cm / cm.sum(axis=1, keepdims=True))
    size = min(9.0, 2.8 + 0.55 * k)
    fig, ax = _figure(size + 1.2, size)
    im = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            ax.text(
                j,
                i,
                f"{cm[i, j]}",
                ha="center",
                va="center",
                fontsize=9 if k <= 10 else 7,
                color="white" if rates[i, j] > 0.55 else "#1f2328",
            )
    ax.set_xticks(
        range(k),
        class_names,
        rotation=30 if max(map(len, class_names)) > 4 else 0,
        ha="right" if max(map(len, class_names)) > 4 else "center",
    )
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{dataset}\n{title}", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    return _save(fig, path)

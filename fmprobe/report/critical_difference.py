"""Critical-difference diagram across datasets (Demšar 2006), from the recommendation's rankings.

Backbones sit on a mean-rank axis (1 = best, left); a thick bar joins backbones that no Holm-corrected pairwise
Wilcoxon test separates (the cliques of :func:`fmprobe.metrics.stats.cliques`; Benavoli et al. 2016 in place of
Demšar's Nemenyi critical difference, so there is no single CD length to draw). Drawn only with at least
:data:`fmprobe.metrics.stats.MIN_DATASETS` datasets, i.e. when the recommendation ran the rank tests.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from fmprobe._io import slug
from fmprobe.report.doc import Block, Heading, Para
from fmprobe.report.plots import _save
from fmprobe.report.recommend import Ranking

if TYPE_CHECKING:
    from fmprobe.report.build import ReportContext

TESTED = "#1f2328"
UNTESTED = "#8c959f"  # ran on some datasets only: ranked, not in the tests (they need complete blocks)


def tested_models(r: Ranking) -> set[str]:
    return set() if r.pairwise is None else set(r.pairwise["a"]) | set(r.pairwise["b"])


def cd_chart(r: Ranking, title: str, path: Path) -> Path:
    """Methods on the rank axis, best half labelled on the left, the rest on the right; cliques as bars."""
    order = sorted(r.mean_rank, key=lambda m: (r.mean_rank[m], m))
    k = max(2, len(order))
    tested = tested_models(r)
    left = math.ceil(len(order) / 2)
    bar_rows = len(r.cliques)
    fig = Figure(figsize=(8.0, 1.5 + 0.28 * (left + bar_rows)))
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.0, 0.0, 1.0, 0.86))
    pad = 0.75 * (k - 1)  # the axis takes the middle 40% of the width, the labels the sides
    ax.set_xlim(1 - pad, k + pad)
    depth = 0.35 + 0.18 * bar_rows
    ax.set_ylim(-(depth + 0.3 * left + 0.2), 0.45)
    ax.axis("off")
    ax.plot([1, k], [0, 0], color=TESTED, lw=1.2)
    for t in range(1, k + 1):
        ax.plot([t, t], [0, 0.08], color=TESTED, lw=1)
        ax.text(t, 0.13, str(t), ha="center", va="bottom", fontsize=8)
    for i, m in enumerate(order):
        rank, color = r.mean_rank[m], TESTED if m in tested else UNTESTED
        row = i if i < left else len(order) - 1 - i
        y = -(depth + 0.3 * row)
        end = 1 - 0.15 * (k - 1) if i < left else k + 0.15 * (k - 1)
        ax.plot([rank, rank, end], [0, y, y], color=color, lw=1, gid=f"method:{m}")
        ax.text(end, y, f"{m} ({rank:.2f}, {r.n_datasets.get(m, 0)})" if i < left else
                f"({rank:.2f}, {r.n_datasets.get(m, 0)}) {m}", ha="right" if i < left else "left", va="center",
                fontsize=8, color=color)  # fmt: skip
    for j, clique in enumerate(r.cliques):
        ranks = [r.mean_rank[m] for m in clique]
        y = -(0.22 + 0.18 * j)
        ax.plot([min(ranks) - 0.04, max(ranks) + 0.04], [y, y], color=TESTED, lw=4, solid_capstyle="round",
                gid="clique:" + "~".join(clique))  # fmt: skip
    fig.suptitle(title, fontsize=9)
    return _save(fig, path, tight=False)  # the axes fill the figure by design


def cd_blocks(ctx: ReportContext) -> list[Block]:
    """The critical-difference diagram of each ranking the rank tests ran on (>= 3 datasets), with its caveat."""
    rec = ctx.recommendation
    tested = [r for r in rec.rankings if r.pairwise is not None]
    if not tested:
        return []
    blocks: list[Block] = [Heading("Across datasets: critical-difference diagram")]
    figures = ctx.figures
    for r in tested:
        what = f"with {r.probe}" if r.probe else "each with its best probe on validation"
        friedman = f"Friedman p = {r.friedman_p:.3f}; " if math.isfinite(r.friedman_p) else ""
        path = figures.file(f"critical_difference_{slug(r.probe or 'overall')}.png")
        chart = cd_chart(r, f"Backbones {what}: mean rank over {r.n_total} datasets ({friedman}Wilcoxon-Holm bars)",
                         path)  # fmt: skip
        untested = sorted(set(r.mean_rank) - tested_models(r))
        blocks += [
            Para(
                f"Backbones {what}, by mean rank across datasets (1 = best; in brackets: mean rank, datasets). "
                f"{friedman}a bar joins backbones that no pairwise Wilcoxon signed-rank test separates after Holm "
                f"correction (alpha = {rec.alpha:g})"
                + (
                    f"; grey: ranked but not tested, as they did not run on every dataset ({', '.join(untested)})"
                    if untested
                    else ""
                )
                + f". With {r.n_total} datasets these tests have little power: backbones without a shared bar "
                "differ significantly at this alpha, but a shared bar is no evidence that they are equal."
            ),  # fmt: skip
            figures.image(chart, f"critical difference {r.probe or 'overall'}"),
        ]
    return blocks

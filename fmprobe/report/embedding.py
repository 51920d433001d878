"""Embedding maps: a 2-D picture of each backbone's feature space on a dataset, coloured by class, train vs test.

Read from the feature cache of each backbone's validation-chosen probe cell (``Predictions.meta["feature_file"]``,
the readout the cell used), on CPU: a stratified subsample of at most :data:`MAX_POINTS` train + test points
(per split and class in proportion, seeded), PCA to :data:`PCA_DIMS` dimensions, then scikit-learn's t-SNE
(seeded) or, when the optional ``umap-learn`` package is importable and asked for, UMAP. A backbone whose feature
file is not reachable here (results copied from another machine) is named in the section, not an error.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from fmprobe._io import slug
from fmprobe.errors import FmprobeError
from fmprobe.report.analysis import cell_predictions
from fmprobe.report.doc import Block, Heading, Para
from fmprobe.report.plots import PALETTE, _save
from fmprobe.tasks import TEST, TRAIN

if TYPE_CHECKING:
    from fmprobe.report.analysis import Choice
    from fmprobe.report.build import DatasetContext

log = logging.getLogger(__name__)

MAX_POINTS = 2000  # train + test points per map: t-SNE's cost grows ~ n log n, this keeps a map to seconds
PCA_DIMS = 50
SMALL_MAP = 1000  # fewer points than this: t-SNE on one thread
SEED = 0
MAX_ITER = 500  # t-SNE iterations (scikit-learn's default is 1000; the map's layout settles well before)


NOT_PROBED = "its cell records no feature file (not a probe cell)"


class MapMethod(StrEnum):
    """How the 2-D map is computed: ``auto`` = UMAP when ``umap-learn`` is importable, else t-SNE."""

    auto = "auto"
    tsne = "tsne"
    umap = "umap"


def resolve(method: MapMethod | str) -> MapMethod:
    method = MapMethod(method)
    if method is MapMethod.auto:
        return MapMethod.umap if importlib.util.find_spec("umap") is not None else MapMethod.tsne
    return method


def subsample(groups: np.ndarray, max_points: int = MAX_POINTS, seed: int = SEED) -> np.ndarray:
    """Sorted indices of at most ``max_points`` rows, each group (split x class) in proportion, at least one each."""
    if len(groups) <= max_points:
        return np.arange(len(groups))
    rng = np.random.default_rng(seed)
    keys, inverse = np.unique(groups, return_inverse=True)
    picked = []
    for k in range(len(keys)):
        members = np.flatnonzero(inverse == k)
        take = max(1, round(len(members) * max_points / len(groups)))
        picked.append(rng.choice(members, min(take, len(members)), replace=False))
    return np.sort(np.concatenate(picked))


class NoMap(FmprobeError):
    """The features cannot be mapped (too few distinct points): the section says so for that backbone."""


MIN_DISTINCT = 5  # fewer distinct feature vectors than this: no map (t-SNE needs neighbours)


def embed_2d(x: np.ndarray, method: MapMethod | str = MapMethod.tsne, seed: int = SEED) -> np.ndarray:
    """[n, 2] coordinates of ``x`` [n, d]: PCA to :data:`PCA_DIMS` dimensions, then t-SNE or UMAP, seeded.

    Identical feature vectors are mapped once and share their point: scikit-learn's Barnes-Hut t-SNE crashes the
    interpreter (a segmentation fault, measured) on repeated points, and identical features belong in one place
    anyway. Fewer than :data:`MIN_DISTINCT` distinct vectors (constant features, e.g. a collapsed backbone) raise
    :class:`NoMap`."""
    from sklearn.decomposition import PCA

    x = np.asarray(x, dtype=np.float64)
    distinct, inverse = np.unique(x, axis=0, return_inverse=True)
    if len(distinct) < MIN_DISTINCT:
        raise NoMap(f"only {len(distinct)} distinct feature vector(s) among {len(x)} points: nothing to map")
    dims = min(PCA_DIMS, distinct.shape[0] - 1, distinct.shape[1])
    z = PCA(dims, random_state=seed).fit_transform(distinct) if dims < distinct.shape[1] else distinct - distinct.mean(axis=0)
    return _embed_distinct(z, method, seed)[inverse.ravel()]


def _embed_distinct(z: np.ndarray, method: MapMethod | str, seed: int) -> np.ndarray:
    if resolve(method) is MapMethod.umap:
        import umap  # optional: only when importable (resolve)

        return np.asarray(umap.UMAP(random_state=seed, n_neighbors=min(15, len(z) - 1)).fit_transform(z))
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    perplexity = float(min(30.0, max(2.0, (len(z) - 1) / 3.0)))
    tsne = TSNE(2, init="pca", learning_rate="auto", perplexity=perplexity, random_state=seed, max_iter=MAX_ITER)
    # small maps on one thread: OpenMP threads spinning on busy cores made a 150-point map 10x slower (measured)
    with threadpool_limits(1 if len(z) < SMALL_MAP else None):
        return np.asarray(tsne.fit_transform(z))


@dataclass(frozen=True)
class Map:
    """One backbone's map: coordinates, class index (-1: no positive label), split of each point."""

    model: str
    xy: np.ndarray
    label: np.ndarray
    split: np.ndarray
    n_total: int
    seconds: float


def _class_of(labels: np.ndarray) -> np.ndarray:
    """Single-label: the class; multi-label: the first positive label, -1 when none."""
    if labels.ndim == 1:
        return labels.astype(np.int64)
    positive = labels == 1
    return np.where(positive.any(axis=1), positive.argmax(axis=1), -1)


def map_of(model: str, feature_file: Path, readout: str, method: MapMethod | str = MapMethod.tsne) -> Map:
    """The map of one feature file's train and test splits (``readout`` as the probe used it)."""
    from fmprobe.store.features import FeatureFile

    started = time.perf_counter()
    cache = FeatureFile(feature_file)
    parts = [cache.load(split, readout) for split in (TRAIN, TEST)]
    x = np.concatenate([p.features for p in parts])
    label = np.concatenate([_class_of(p.labels) for p in parts])
    split = np.repeat([TRAIN, TEST], [len(p.features) for p in parts])
    keep = subsample(np.char.add(split.astype(str), label.astype(str)))
    xy = embed_2d(x[keep], method)
    return Map(model, xy, label[keep], split[keep], len(x), time.perf_counter() - started)


def map_chart(dataset: str, maps: list[Map], class_names: list[str], method: str, path: Path) -> Path:
    """One panel per backbone; colour = class, dot = train, triangle = test."""
    n = len(maps)
    cols = min(3, n)
    rows = -(-n // cols)
    fig = Figure(figsize=(3.6 * cols + 1.8, 3.5 * rows + 0.4))
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    names = dict(enumerate(class_names)) | {-1: "no positive label"}
    for ax, m in zip(axes, maps, strict=False):
        for k in sorted(set(m.label.tolist())):
            color = "#999999" if k < 0 else PALETTE[k % len(PALETTE)]
            for split, marker, size in ((TRAIN, "o", 5), (TEST, "^", 9)):
                sel = (m.label == k) & (m.split == split)
                ax.scatter(m.xy[sel, 0], m.xy[sel, 1], s=size, marker=marker, color=color, alpha=0.55, lw=0,
                           label=f"{names.get(k, k)} ({split})", rasterized=True)  # fmt: skip
        ax.set_title(f"{m.model}\n{len(m.xy)} of {m.n_total} points", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[n:]:
        ax.set_visible(False)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, frameon=False, loc="center right", markerscale=1.6)
    fig.suptitle(f"{dataset}: {method} map of the features", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1 - 1.8 / fig.get_figwidth(), 0.95))
    return _save(fig, path, tight=False)  # laid out above, with room for the legend


def _feature_file(choice: Choice) -> tuple[Path | None, str]:
    """The chosen cell's feature file, or None and why it cannot be read here."""
    try:
        meta = cell_predictions(str(choice.first["predictions"])).meta
    except FmprobeError as e:
        return None, str(e)
    recorded = meta.get("feature_file")
    if not recorded:
        return None, NOT_PROBED
    path = Path(recorded)
    return (path, "") if path.is_file() else (None, f"feature file {recorded} is not reachable on this machine")


def embedding_blocks(d: DatasetContext, method: MapMethod | str = MapMethod.tsne) -> list[Block]:
    """A map per backbone of this dataset (see the module docstring); a note per backbone without one."""
    v, figures = d.view, d.report.figures
    maps, missing, class_names = [], [], None
    for model, choice in sorted(d.chosen.items(), key=lambda kv: (kv[0] != d.report.headline.baseline, kv[0])):
        path, why = _feature_file(choice)
        if path is None:
            missing.append(f"`{model}`: {why}")
            continue
        try:
            maps.append(map_of(model, path, choice.readout, method))
            class_names = class_names or cell_predictions(str(choice.first["predictions"])).class_names
        except FmprobeError as e:
            missing.append(f"`{model}`: {e}")
    if not maps and all(m.endswith(NOT_PROBED) for m in missing):  # no probe cell (fine-tuning): nothing to map
        return []
    name = resolve(method).value.replace("tsne", "t-SNE").replace("umap", "UMAP")
    blocks: list[Block] = [Heading("Embedding maps", 3)]
    if maps:
        seconds = sum(m.seconds for m in maps)
        log.info("embedding maps of %s: %d backbone(s), %.1f s", v.name, len(maps), seconds)
        path = map_chart(v.name, maps, class_names or [], name, figures.file(f"embedding_{slug(v.name)}.png"))
        blocks += [
            Para(
                f"{name} of each backbone's features (the readout its chosen probe used), train (dots) and test "
                f"(triangles), coloured by class{'; multi-label: the first positive label' if v.task == 'multilabel' else ''}: "
                f"a stratified sample of at most {MAX_POINTS} points, PCA to {PCA_DIMS} dimensions first, seed "
                f"{SEED}. Distances between clusters in such a map mean little; "
                "separated colours suggest a linear probe will do well."
            ),  # fmt: skip
            figures.image(path, f"embedding maps {v.name}"),
        ]
    if missing:
        blocks.append(Para("No map for " + "; ".join(missing) + "."))
    return blocks
